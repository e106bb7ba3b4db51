"""Per-data-folder network: a bridge, dnsmasq (DHCP + DNS) on it, NAT to the host's uplinks.

Like Multipass's ``mpqemubr0``: one bridge per data folder, named ``mpd`` + 8 hex of the folder's path,
with a random ``10.X.Y.0/24`` chosen once and kept in ``<data>/network/multipass_subnet``. Everything
machine-wide (choosing a free subnet, the NAT rules, ``net.ipv4.ip_forward`` and its original value,
the registry of data folders) happens under ``<images>/network.lock``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import random
import re
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path

from multipass_double import hostutil
from multipass_double.config import Paths
from multipass_double.errors import BackendError

BRIDGE_RE = re.compile(r"^mpd[0-9a-f]{8}$")
RULE_TAG = "agentvm-double"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
DOMAIN = "multipass"


@dataclass(frozen=True)
class Network:
    bridge: str
    prefix: str  # "10.X.Y"

    @property
    def gateway(self) -> str:
        return f"{self.prefix}.1"

    @property
    def cidr(self) -> str:
        return f"{self.prefix}.0/24"

    def contains(self, address: str) -> bool:
        return ipaddress.ip_address(address) in ipaddress.ip_network(self.cidr)


def bridge_name(data: Path) -> str:
    return "mpd" + hashlib.sha256(str(data).encode()).hexdigest()[:8]


def machine_lock(paths: Paths) -> contextlib.AbstractContextManager[None]:
    return hostutil.file_lock(paths.images / "network.lock")


def subnet_file(paths: Paths) -> Path:
    return paths.network / "multipass_subnet"


def current(paths: Paths) -> Network | None:
    """The data folder's network as recorded (whether or not it is up)."""
    try:
        prefix = subnet_file(paths).read_text().strip()
    except OSError:
        return None
    return Network(bridge_name(paths.data), prefix)


def bridge_exists(bridge: str) -> bool:
    return Path(f"/sys/class/net/{bridge}").exists()


def ensure(paths: Paths) -> Network:
    paths.network.mkdir(parents=True, exist_ok=True)
    with machine_lock(paths):
        register(paths)
        net = current(paths) or _choose_subnet(paths)
        _ensure_forwarding(paths)
        _ensure_bridge(net)
        _ensure_nat(net)
        _ensure_dnsmasq(paths, net)
    return net


# -- subnet --------------------------------------------------------------------------------------


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for route in json.loads(hostutil.run(["ip", "-json", "-4", "route", "show", "table", "all"]) or "[]"):
        dst = route.get("dst", "")
        with contextlib.suppress(ValueError):
            if dst and dst != "default":
                used.append(ipaddress.ip_network(dst, strict=False))
    for link in json.loads(hostutil.run(["ip", "-json", "-4", "address", "show"]) or "[]"):
        for info in link.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for resolver in _host_nameservers():
        used.append(ipaddress.ip_network(f"{resolver}/24", strict=False))
    return used


def _host_nameservers() -> list[str]:
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver" and ":" not in words[1]:
                found.append(words[1])
    return found


def _choose_subnet(paths: Paths) -> Network:
    used = [n for n in _used_networks() if n.prefixlen > 0]
    rng = random.SystemRandom()
    for _ in range(500):
        prefix = f"10.{rng.randint(1, 254)}.{rng.randint(0, 255)}"
        candidate = ipaddress.ip_network(f"{prefix}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            hostutil.write_atomic(subnet_file(paths), prefix + "\n")
            return Network(bridge_name(paths.data), prefix)
    raise BackendError("no free 10.X.Y.0/24 subnet found for the double's bridge; check `ip route`")


# -- bridge, forwarding, NAT ---------------------------------------------------------------------


def _ensure_bridge(net: Network) -> None:
    if not bridge_exists(net.bridge):
        hostutil.run(["ip", "link", "add", net.bridge, "type", "bridge"])
    hostutil.run(["ip", "address", "replace", f"{net.gateway}/24", "dev", net.bridge])
    hostutil.run(["ip", "link", "set", net.bridge, "up"])


def _forward_orig(paths: Paths) -> Path:
    return paths.images / "ip_forward.orig"


def _ensure_forwarding(paths: Paths) -> None:
    orig = _forward_orig(paths)
    if not orig.exists() and not any_double_bridge():
        hostutil.write_atomic(orig, IP_FORWARD.read_text())
    if IP_FORWARD.read_text().strip() != "1":
        IP_FORWARD.write_text("1\n")


def any_double_bridge() -> bool:
    return bool(double_bridges())


def double_bridges() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if BRIDGE_RE.match(p.name))


def restore_forwarding_if_unused(paths: Paths) -> str | None:
    """Put ip_forward back to its value from before the first double network, once none is left."""
    orig = _forward_orig(paths)
    if any_double_bridge() or not orig.exists():
        return None
    value = orig.read_text().strip() or "0"
    IP_FORWARD.write_text(value + "\n")
    orig.unlink()
    return f"restored net.ipv4.ip_forward={value}"


def _nat_rules(net: Network) -> list[tuple[str, list[str]]]:
    tag = ["-m", "comment", "--comment", f"{RULE_TAG} {net.bridge}"]
    return [
        ("nat", ["POSTROUTING", "-s", net.cidr, "!", "-o", net.bridge, *tag, "-j", "MASQUERADE"]),
        ("filter", ["FORWARD", "-i", net.bridge, *tag, "-j", "ACCEPT"]),
        ("filter", ["FORWARD", "-o", net.bridge, *tag, "-j", "ACCEPT"]),
    ]


def _ensure_nat(net: Network) -> None:
    for table, rule in _nat_rules(net):
        if not _rule_present(table, rule):
            verb = "-A" if table == "nat" else "-I"  # FORWARD: ahead of any DROP (e.g. Docker's)
            hostutil.run(["iptables", "-w", "-t", table, verb, *rule], timeout=30)


def _rule_present(table: str, rule: list[str]) -> bool:
    try:
        hostutil.run(["iptables", "-w", "-t", table, "-C", *rule], timeout=30)
    except hostutil.HostError:
        return False
    return True


def remove_rules(match: str) -> list[str]:
    """Delete every iptables rule (nat and filter) whose comment contains ``match``."""
    done = []
    for table in ("nat", "filter"):
        try:
            listing = hostutil.run(["iptables", "-w", "-t", table, "-S"], timeout=30)
        except hostutil.HostError:
            continue  # no iptables: nothing of ours either
        for line in listing.splitlines():
            if line.startswith("-A ") and match in line:
                argv = shlex.split(line)
                argv[0] = "-D"
                hostutil.run(["iptables", "-w", "-t", table, *argv], check=False, timeout=30)
                done.append(f"removed iptables rule ({table}) {line[3:]}")
    return done


# -- dnsmasq -------------------------------------------------------------------------------------


def _pid_file(paths: Paths) -> Path:
    return paths.network / "dnsmasq.pid"


def dnsmasq_pids(bridge_pattern: re.Pattern[str]) -> list[int]:
    """Running dnsmasq processes serving a bridge whose name matches the pattern."""
    found = []
    for pid in hostutil.all_pids():
        argv = hostutil.cmdline(pid)
        if not argv or not argv[0].endswith("dnsmasq"):
            continue
        for arg in argv:
            if arg.startswith("--interface=") and bridge_pattern.match(arg.split("=", 1)[1]):
                found.append(pid)
    return found


def _dnsmasq_running(net: Network) -> bool:
    return bool(dnsmasq_pids(re.compile(f"^{net.bridge}$")))


def _ensure_dnsmasq(paths: Paths, net: Network) -> None:
    if _dnsmasq_running(net):
        return
    argv = [
        "dnsmasq",
        "--conf-file=/dev/null",
        f"--pid-file={_pid_file(paths)}",
        f"--dhcp-leasefile={paths.network / 'dnsmasq.leases'}",
        f"--log-facility={paths.network / 'dnsmasq.log'}",
        f"--interface={net.bridge}",
        "--bind-interfaces",
        "--except-interface=lo",
        f"--listen-address={net.gateway}",
        f"--dhcp-range={net.prefix}.2,{net.prefix}.254,255.255.255.0,24h",
        "--dhcp-authoritative",
        "--no-ping",  # the ICMP probe before an offer costs ~3 s per boot; the range is ours alone
        "--no-hosts",
        "--resolv-file=/etc/resolv.conf",
        f"--domain={DOMAIN}",
        f"--local=/{DOMAIN}/",
        "--user=root",
    ]
    try:
        hostutil.run(argv, timeout=30)
    except hostutil.HostError as exc:
        raise BackendError(
            f"cannot start dnsmasq on {net.bridge} ({net.gateway}): {exc}. "
            "Is another DNS/DHCP server bound to that address? `multipass-double down` cleans up ours."
        ) from exc


def stop_dnsmasq(net_bridge: str) -> list[str]:
    done = []
    for pid in dnsmasq_pids(re.compile(f"^{net_bridge}$")):
        hostutil.kill(pid, signal.SIGTERM)
        if not hostutil.wait_gone(pid, 5):
            hostutil.kill(pid)
        done.append(f"stopped dnsmasq (pid {pid}) on {net_bridge}")
    return done


# -- teardown ------------------------------------------------------------------------------------


def delete_bridge(bridge: str) -> list[str]:
    if not bridge_exists(bridge):
        return []
    hostutil.run(["ip", "link", "delete", bridge], check=False)
    return [f"deleted bridge {bridge}"]


def teardown(paths: Paths) -> list[str]:
    bridge = bridge_name(paths.data)
    with machine_lock(paths):
        done = stop_dnsmasq(bridge)
        done += delete_bridge(bridge)
        done += remove_rules(f"{RULE_TAG} {bridge}")
        restored = restore_forwarding_if_unused(paths)
    return done + ([restored] if restored else [])


# -- registry of data folders --------------------------------------------------------------------


def registered(paths: Paths) -> list[Path]:
    try:
        lines = paths.registry.read_text().splitlines()
    except OSError:
        return []
    return [Path(line) for line in dict.fromkeys(lines) if line.strip()]


def register(paths: Paths) -> None:
    """Add this data folder to the machine-wide registry (call with the machine lock held)."""
    known = registered(paths)
    if paths.data not in known:
        paths.registry.parent.mkdir(parents=True, exist_ok=True)
        hostutil.write_atomic(paths.registry, "".join(f"{p}\n" for p in [*known, paths.data]))


def unregister(paths: Paths, data: Path) -> None:
    with machine_lock(paths):
        known = [p for p in registered(paths) if p != data]
        hostutil.write_atomic(paths.registry, "".join(f"{p}\n" for p in known))
