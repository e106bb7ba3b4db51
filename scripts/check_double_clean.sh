#!/bin/sh
# Fails when anything of the Multipass test double is left on this host: nspawn containers, overlay
# mounts, bridges or DHCP servers. CI runs it after `make test`.
left=0
report() { echo "left behind: $*" >&2; left=1; }
pgrep -f 'systemd-nspawn .*--setenv=AGENTVM_MULTIPASS_DOUBLE=1' >/dev/null && report "systemd-nspawn containers: $(pgrep -f 'systemd-nspawn .*AGENTVM_MULTIPASS_DOUBLE' | tr '\n' ' ')"
grep -q ' overlay .*multipass-double\| overlay .*/\.cache/' /proc/mounts 2>/dev/null && report "overlay mounts: $(grep ' overlay ' /proc/mounts | cut -d' ' -f2 | tr '\n' ' ')"
ip -o link show type bridge 2>/dev/null | grep -q ': mpd' && report "bridges: $(ip -o link show type bridge | awk -F': ' '/: mpd/ {print $2}' | tr '\n' ' ')"
pgrep -f 'dnsmasq .*--interface=mpd' >/dev/null && report "dnsmasq: $(pgrep -f 'dnsmasq .*--interface=mpd' | tr '\n' ' ')"
[ "$left" -eq 0 ] && echo "Nothing of the Multipass double is left on this host."
exit "$left"
