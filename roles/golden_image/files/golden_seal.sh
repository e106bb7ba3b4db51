#!/bin/bash
# Seal the golden builder (run as root, last thing before it is stopped): every clone must get a fresh
# identity and run cloud-init afresh. Arguments: extra paths/globs to remove (caches, histories, temp files).
set -euo pipefail
shopt -s nullglob dotglob

# cloud-init: state and logs, so a clone runs it as a new instance (its seed/datasource is kept).
cloud-init clean --logs
# Machine identity: an empty /etc/machine-id makes systemd generate a new one on the clone's first boot.
truncate -s 0 /etc/machine-id
if [ -e /var/lib/dbus/machine-id ] || [ -L /var/lib/dbus/machine-id ]; then
    ln -sf /etc/machine-id /var/lib/dbus/machine-id
fi
# SSH host keys: cloud-init generates new ones on each clone's first boot.
rm -f /etc/ssh/ssh_host_*
# Package caches.
apt-get clean
# Caches, histories, temp files (globs from the caller).
for pattern in "$@"; do
    # shellcheck disable=SC2086  # the patterns are globs on purpose
    for path in $pattern; do
        case "$path" in
            /tmp/ansible_*) continue ;;  # the payload of the Ansible task running this script
        esac
        rm -rf -- "$path"
    done
done
# Logs: rotated files removed, the others emptied.
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
find /var/log -type f -exec truncate -s 0 {} +
sync
echo sealed
