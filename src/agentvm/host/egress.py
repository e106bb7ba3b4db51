"""Default-deny egress for run VMs, enforced on the host with nftables (Linux).

API (what the run pipeline, the reaper and ``make doctor`` call)::

    from agentvm.host import egress

    egress.probe() -> Probe                  # .ok, .problems (each with its fix), .nft_version; no side effects
    egress.apply(run_id, vm_address, proxy_ports, *, gateway=None, bridge=None, port=None, table="agentvm")
        -> RunRules                          # idempotent (re-applying replaces the run's rules atomically);
                                             # raises EgressError (nothing half-applied)
    egress.remove(run_id, *, table=...)      -> bool   # idempotent; True when something was removed
    egress.list_runs(*, table=...)           -> list[RunRules]   # for the reaper: every run with rules
    egress.counters(run_id, *, table=...)    -> dict[str, Counter]   # packets/bytes per rule purpose
    egress.render(rules, ...)                -> str    # the nft script for a run (pure; what apply loads)

``gateway`` is the host's address on the VMs' bridge, where the proxy listens (pass ``proxy.bind_host``);
``bridge`` and ``port`` (the bridge port the VM's frames arrive on: its tap or veth) are found from the host's
routing table, neighbour table and the bridge's forwarding database when not given (so is ``gateway``).
``open`` mode is simply: do not call ``apply``.

Two tables, both named ``table`` (default ``agentvm``), each with an input-hook and a forward-hook base chain
(policy accept: they only ever drop traffic of the runs they know) and per-run regular chains:

* ``inet agentvm`` (by the VM's IPv4): input from the VM accepts replies of connections the host opened
  (``ct state established,related``: e.g. Multipass's SSH) and new TCP to the gateway's proxy ports, and rejects
  everything else (DNS to dnsmasq on the gateway included); forward rejects everything from the VM (any
  destination, DNS included). Rejects (TCP reset / ICMP admin-prohibited) make tools fail at once, not hang.
* ``bridge agentvm`` (by the bridge port, which the VM cannot change): frames from the VM's port are dropped
  unless they are ARP or IPv4 from the VM's own address (no IPv6, no changed or borrowed address), and
  frames between the VM's port and any other port (VM to VM) are dropped.

In netfilter a drop/reject in any base chain is final: ACCEPT rules of Multipass, of the double or of Docker in
other tables cannot undo it, and nothing the VM does inside itself (``nft flush ruleset``) reaches these rules.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE = "agentvm"
RUN_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
INET_PRIORITY = "filter - 10"  # ahead of iptables-nft's filter chains (0), so our counters see everything
BRIDGE_PRIORITY = "-210"  # the bridge family's "filter" is -200
NFT_TIMEOUT = 30


class EgressError(RuntimeError):
    """Egress rules cannot be set up or changed (the message says why and what to do)."""


@dataclass(frozen=True)
class RunRules:
    run_id: str
    address: str
    gateway: str
    ports: tuple[int, ...]
    bridge: str
    port: str


@dataclass(frozen=True)
class Counter:
    packets: int = 0
    bytes: int = 0

    def __add__(self, other: Counter) -> Counter:
        return Counter(self.packets + other.packets, self.bytes + other.bytes)


@dataclass(frozen=True)
class Probe:
    ok: bool
    problems: tuple[str, ...]
    nft_version: str | None = None

    def summary(self) -> str:
        if self.ok:
            return f"egress rules can be enforced (nftables {self.nft_version})"
        return "egress rules cannot be enforced: " + "; ".join(self.problems)


# -- validation and rendering (pure) --------------------------------------------------------------


def check_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id):
        raise EgressError(f"run id {run_id!r}: lower-case letters, digits and '-', 1-64 characters")
    return run_id


def check_ipv4(value: str, what: str) -> str:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise EgressError(f"{what} {value!r} is not an IPv4 address") from None
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        raise EgressError(f"{what} {value} cannot be a VM's or bridge's address")
    return str(address)


def check_ports(ports: Iterable[int]) -> tuple[int, ...]:
    found = tuple(sorted({int(p) for p in ports}))
    if not found or not all(1 <= p <= 65535 for p in found):
        raise EgressError(f"proxy ports {list(ports)}: give at least one port from 1 to 65535")
    return found


def check_ifname(value: str, what: str) -> str:
    if not IFNAME.match(value):
        raise EgressError(f"{what} {value!r} is not an interface name nftables rules can carry")
    return value


def _table(value: str) -> str:
    if not TABLE_NAME.match(value):
        raise EgressError(f"table name {value!r}: lower-case letters, digits and '_', starting with a letter")
    return value


def _tag(rules: RunRules) -> str:
    """The comment on a run's jump rules: what ``list_runs`` reads back (nft comments hold 128 bytes)."""
    return f"agentvm run={rules.run_id} addr={rules.address} gw={rules.gateway} ports={','.join(map(str, rules.ports))}"


def _bridge_tag(rules: RunRules) -> str:
    return f"agentvm run={rules.run_id} addr={rules.address} br={rules.bridge}"


def _chains(run_id: str) -> dict[str, str]:
    return {"in": f"in_{run_id}", "fwd": f"fwd_{run_id}", "port": f"port_{run_id}"}


def _base_chains(table: str) -> list[str]:
    return [
        f"add table inet {table}",
        f"add chain inet {table} input {{ type filter hook input priority {INET_PRIORITY}; policy accept; }}",
        f"add chain inet {table} forward {{ type filter hook forward priority {INET_PRIORITY}; policy accept; }}",
        f"add table bridge {table}",
        f"add chain bridge {table} input {{ type filter hook input priority {BRIDGE_PRIORITY}; policy accept; }}",
        f"add chain bridge {table} forward {{ type filter hook forward priority {BRIDGE_PRIORITY}; policy accept; }}",
    ]


def render(rules: RunRules, *, table: str = TABLE, replace_handles: Sequence[tuple[str, str, int]] = ()) -> str:
    """The nft script that installs (or replaces) one run's rules in one transaction.

    ``replace_handles``: (family, chain, handle) of this run's existing jump rules, deleted in the same
    transaction (re-apply)."""
    t = _table(table)
    check_run_id(rules.run_id)
    vm, gw = check_ipv4(rules.address, "VM address"), check_ipv4(rules.gateway, "gateway")
    ports = ", ".join(map(str, check_ports(rules.ports)))
    port = check_ifname(rules.port, "bridge port")
    c = _chains(rules.run_id)
    lines = _base_chains(t)
    for family, chain in (("inet", c["in"]), ("inet", c["fwd"]), ("bridge", c["port"])):
        lines += [f"add chain {family} {t} {chain}", f"flush chain {family} {t} {chain}"]
    lines += [f"delete rule {family} {t} {chain} handle {handle}" for family, chain, handle in replace_handles]
    tag, btag = _tag(rules), _bridge_tag(rules)
    if len(tag) > 127 or len(btag + " lateral") > 127:
        raise EgressError(f"run id {rules.run_id!r} is too long for the rules' comments (at most 128 bytes)")
    lines += [
        f'add rule inet {t} input ip saddr {vm} jump {c["in"]} comment "{tag}"',
        f'add rule inet {t} forward ip saddr {vm} jump {c["fwd"]} comment "{tag}"',
        f'add rule inet {t} {c["in"]} ct state established,related counter accept comment "established"',
        f"add rule inet {t} {c['in']} ip daddr {gw} tcp dport {{ {ports} }} ct state new counter accept "
        'comment "proxy"',
        f'add rule inet {t} {c["in"]} meta l4proto tcp counter reject with tcp reset comment "deny-input"',
        f'add rule inet {t} {c["in"]} counter reject with icmpx type admin-prohibited comment "deny-input"',
        f'add rule inet {t} {c["fwd"]} meta l4proto tcp counter reject with tcp reset comment "deny-forward"',
        f'add rule inet {t} {c["fwd"]} counter reject with icmpx type admin-prohibited comment "deny-forward"',
        f'add rule bridge {t} input iifname "{port}" jump {c["port"]} comment "{btag}"',
        f'add rule bridge {t} forward iifname "{port}" counter drop comment "{btag} lateral"',
        f'add rule bridge {t} forward oifname "{port}" counter drop comment "{btag} lateral"',
        f"add rule bridge {t} {c['port']} ether type arp arp saddr ip {vm} accept",
        f"add rule bridge {t} {c['port']} ether type ip ip saddr {vm} accept",
        f'add rule bridge {t} {c["port"]} counter drop comment "spoofed"',
    ]
    return "\n".join(lines) + "\n"


def render_removal(run_id: str, listing: Sequence[dict[str, Any]], *, table: str = TABLE) -> str:
    """The nft script that deletes one run's rules and chains, given both tables' ``nft -j`` objects."""
    t = _table(table)
    c = _chains(check_run_id(run_id))
    lines = []
    existing = set()
    for obj in listing:
        if "chain" in obj:
            existing.add((obj["chain"]["family"], obj["chain"]["name"]))
        rule = obj.get("rule")
        if rule and rule["chain"] in ("input", "forward") and _comment_run(rule.get("comment")) == run_id:
            lines.append(f"delete rule {rule['family']} {t} {rule['chain']} handle {rule['handle']}")
    for family, chain in (("inet", c["in"]), ("inet", c["fwd"]), ("bridge", c["port"])):
        if (family, chain) in existing:
            lines.append(f"delete chain {family} {t} {chain}")
    return "\n".join(lines) + ("\n" if lines else "")


def _comment_fields(comment: str | None) -> dict[str, str]:
    if not comment or not comment.startswith("agentvm "):
        return {}
    return dict(word.split("=", 1) for word in comment.split()[1:] if "=" in word)


def _comment_run(comment: str | None) -> str | None:
    return _comment_fields(comment).get("run")


def runs_from_listing(listing: Sequence[dict[str, Any]]) -> list[RunRules]:
    """Runs found in ``nft -j`` objects of both tables (the inet input jump and the bridge input jump)."""
    inet: dict[str, dict[str, str]] = {}
    ports: dict[str, tuple[str, str]] = {}
    for obj in listing:
        rule = obj.get("rule")
        if not rule or rule["chain"] != "input":
            continue
        fields = _comment_fields(rule.get("comment"))
        if "run" not in fields:
            continue
        if rule["family"] == "inet":
            inet[fields["run"]] = fields
        elif rule["family"] == "bridge":
            ports[fields["run"]] = (fields.get("br", ""), _iifname(rule) or "")
    found = []
    for run_id, fields in sorted(inet.items()):
        bridge, port = ports.get(run_id, ("", ""))
        ports_text = fields.get("ports", "")
        found.append(
            RunRules(
                run_id=run_id,
                address=fields.get("addr", ""),
                gateway=fields.get("gw", ""),
                ports=tuple(int(p) for p in ports_text.split(",") if p.isdigit()),
                bridge=bridge,
                port=port,
            )
        )
    return found


def _iifname(rule: dict[str, Any]) -> str | None:
    for expr in rule.get("expr", []):
        match = expr.get("match")
        if match and match.get("left", {}).get("meta", {}).get("key") == "iifname":
            return str(match.get("right"))
    return None


def counters_from_listing(run_id: str, listing: Sequence[dict[str, Any]]) -> dict[str, Counter]:
    """Packets/bytes per purpose: proxy, established, deny-input, deny-forward, spoofed, lateral."""
    chains = set(_chains(check_run_id(run_id)).values())
    totals: dict[str, Counter] = {}
    for obj in listing:
        rule = obj.get("rule")
        if not rule:
            continue
        comment = rule.get("comment") or ""
        if rule["chain"] in chains:
            name = comment
        elif rule["chain"] == "forward" and _comment_run(comment) == run_id and comment.endswith(" lateral"):
            name = "lateral"
        else:
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr and name:
                value = Counter(int(expr["counter"].get("packets", 0)), int(expr["counter"].get("bytes", 0)))
                totals[name] = totals.get(name, Counter()) + value
    return totals


# -- running nft ----------------------------------------------------------------------------------


def _nft(args: Sequence[str], script: str | None = None) -> str:
    nft = shutil.which("nft")
    if nft is None:
        raise EgressError("nft is not installed: apt-get install nftables (or run with EGRESS=open)")
    try:
        proc = subprocess.run(
            [nft, *args], input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise EgressError(f"nft {' '.join(args)} did not finish in {NFT_TIMEOUT} s") from None
    if proc.returncode != 0:
        raise EgressError(f"nft {' '.join(args)} failed: {proc.stderr.strip()[:2000]}")
    return proc.stdout


def _listing(table: str) -> list[dict[str, Any]]:
    """Both tables' objects (``[]`` for a table that does not exist)."""
    objects: list[dict[str, Any]] = []
    for family in ("inet", "bridge"):
        try:
            out = _nft(["-j", "list", "table", family, _table(table)])
        except EgressError as exc:
            if "No such file or directory" in str(exc):
                continue
            raise
        objects += json.loads(out or "{}").get("nftables", [])
    return objects


@contextlib.contextmanager
def _locked(table: str) -> Iterator[None]:
    folder = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    _table(table)
    path = folder / "agentvm-egress.lock"  # one for all tables: a lock file per table would pile up
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- host discovery -------------------------------------------------------------------------------


def _ip_json(args: Sequence[str], tool: str = "ip") -> list[dict[str, Any]]:
    exe = shutil.which(tool)
    if exe is None:
        raise EgressError(f"`{tool}` (iproute2) is missing: apt-get install iproute2")
    proc = subprocess.run([exe, "-json", *args], capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise EgressError(f"{tool} {' '.join(args)} failed: {proc.stderr.strip()[:500]}")
    return json.loads(proc.stdout or "[]")


def route_to(address: str) -> tuple[str, str]:
    """(device, the host's source address) for a directly attached VM address."""
    routes = _ip_json(["route", "get", address])
    if not routes:
        raise EgressError(f"no route to the VM address {address}")
    route = routes[0]
    if route.get("gateway") or route.get("type") == "local":
        raise EgressError(f"{address} is not on a network attached to this host (no VM bridge leads to it)")
    return str(route["dev"]), str(route["prefsrc"])


def is_bridge(device: str) -> bool:
    return Path(f"/sys/class/net/{device}/bridge").is_dir()


def bridge_port_of(address: str, bridge: str, timeout: float = 3.0) -> str:
    """The bridge port (tap/veth) whose frames carry ``address``: neighbour MAC, then the bridge's fdb."""
    deadline = time.monotonic() + timeout
    while True:
        mac = _neighbour_mac(address, bridge)
        if mac:
            for entry in _ip_json(["fdb", "show", "br", bridge], tool="bridge"):
                if entry.get("mac") == mac and entry.get("master") == bridge and entry.get("ifname") != bridge:
                    return str(entry["ifname"])
        if time.monotonic() > deadline:
            raise EgressError(
                f"cannot tell which port of {bridge} carries {address} (no ARP answer or fdb entry): "
                "is the VM running? Give port= explicitly."
            )
        _nudge(address)
        time.sleep(0.1)


def _neighbour_mac(address: str, bridge: str) -> str | None:
    for entry in _ip_json(["neigh", "show", address, "dev", bridge]):
        if entry.get("lladdr") and entry.get("state") not in (["FAILED"], ["INCOMPLETE"]):
            return str(entry["lladdr"]).lower()
    return None


def _nudge(address: str) -> None:
    """Make the kernel resolve the VM's MAC (one UDP datagram to the discard port triggers ARP)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"", (address, 9))


# -- the API --------------------------------------------------------------------------------------


def apply(
    run_id: str,
    vm_address: str,
    proxy_ports: Iterable[int],
    *,
    gateway: str | None = None,
    bridge: str | None = None,
    port: str | None = None,
    table: str = TABLE,
) -> RunRules:
    check_run_id(run_id)
    address = check_ipv4(vm_address, "VM address")
    ports = check_ports(proxy_ports)
    device, source = route_to(address)
    bridge = bridge or device
    if not is_bridge(bridge):
        raise EgressError(f"{bridge} (the way to {address}) is not a bridge; run VMs must sit on a bridge")
    rules = RunRules(
        run_id=run_id,
        address=address,
        gateway=check_ipv4(gateway or source, "gateway"),
        ports=ports,
        bridge=check_ifname(bridge, "bridge"),
        port=check_ifname(port or bridge_port_of(address, bridge), "bridge port"),
    )
    with _locked(table):
        listing = _listing(table)
        for other in runs_from_listing(listing):
            if other.run_id != run_id and other.address == address:
                raise EgressError(f"{address} already has rules of run {other.run_id}: remove them first")
        old = [
            (obj["rule"]["family"], obj["rule"]["chain"], int(obj["rule"]["handle"]))
            for obj in listing
            if "rule" in obj
            and obj["rule"]["chain"] in ("input", "forward")
            and _comment_run(obj["rule"].get("comment")) == run_id
        ]
        _nft(["-f", "-"], render(rules, table=table, replace_handles=old))
    return rules


def remove(run_id: str, *, table: str = TABLE) -> bool:
    check_run_id(run_id)
    with _locked(table):
        listing = _listing(table)
        script = render_removal(run_id, listing, table=table)
        if script:
            _nft(["-f", "-"], script)
        if not runs_from_listing(_listing(table)):
            _drop_tables(table)
    return bool(script)


def _drop_tables(table: str) -> None:
    for family in ("inet", "bridge"):
        with contextlib.suppress(EgressError):
            _nft(["delete", "table", family, _table(table)])


def list_runs(*, table: str = TABLE) -> list[RunRules]:
    return runs_from_listing(_listing(table))


def counters(run_id: str, *, table: str = TABLE) -> dict[str, Counter]:
    return counters_from_listing(run_id, _listing(table))


PROBE_RULES = RunRules("probe", "192.0.2.2", "192.0.2.1", (1,), "probe0", "probe1")


def probe() -> Probe:
    """Whether this host can enforce the rules: Linux, root, nft, iproute2, and kernel support (a dry run of
    a complete run's script with ``nft --check``: nothing is loaded)."""
    problems = []
    if platform.system() != "Linux":
        problems.append(
            f"{platform.system()} has no nftables: on macOS load the pf anchor (docs/security-isolation.md)"
        )
        return Probe(False, tuple(problems))
    if os.geteuid() != 0:
        problems.append("not root: nftables rules need root (run as root, or EGRESS=open to skip enforcement)")
    for tool, package in (("nft", "nftables"), ("ip", "iproute2"), ("bridge", "iproute2")):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` is missing: apt-get install {package}")
    if problems:
        return Probe(False, tuple(problems))
    version = None
    try:
        version = _nft(["--version"]).strip().split(" ")[1]
        _nft(["--check", "-f", "-"], render(PROBE_RULES, table="agentvm_probe"))
    except (EgressError, IndexError) as exc:
        problems.append(f"the kernel refuses the rules ({exc}); needs nf_tables with inet, bridge, reject, ct")
    return Probe(not problems, tuple(problems), version)
