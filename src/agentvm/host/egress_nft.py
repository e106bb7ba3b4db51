"""A run's nftables rules as text, and what ``nft -j`` listings of them say (pure: no process is started here).

Two tables, both named ``table`` (default ``agentvm``), each with an input-hook and a forward-hook base chain
(policy accept: they only ever drop traffic of the runs they know) and per-run regular chains:

* ``inet agentvm`` (by the VM's IPv4): input from the VM accepts replies of connections the host opened
  (``ct state established,related``: e.g. Multipass's SSH) and new TCP to the gateway's proxy ports, and rejects
  everything else (DNS to dnsmasq on the gateway included); forward rejects everything from the VM (any
  destination, DNS included). Rejects (TCP reset / ICMP admin-prohibited) make tools fail at once, not hang.
* ``bridge agentvm`` (by the bridge port, which the VM cannot change): frames from the VM's port are dropped
  unless they are ARP or IPv4 from the VM's own address (no IPv6, no changed or borrowed address), and
  frames between the VM's port and any other port (VM to VM) are dropped.

A run's jump rules carry a comment (``agentvm run=… addr=… gw=… ports=…``) from which ``runs_from_listing`` reads
the run back: the tables themselves are the record of which runs have rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentvm.host.egress_checks import EgressError, check_ifname, check_ipv4, check_ports, check_run_id, check_table

TABLE = "agentvm"
FAMILIES = ("inet", "bridge")
BASE_CHAINS = ("input", "forward")
INET_PRIORITY = "filter - 10"  # ahead of iptables-nft's filter chains (0), so our counters see everything
BRIDGE_PRIORITY = "-210"  # the bridge family's "filter" is -200
MAX_COMMENT = 127  # nft comments hold 128 bytes
Listing = Sequence[dict[str, Any]]


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


def _chains(run_id: str) -> list[tuple[str, str]]:
    """(family, name) of a run's own chains."""
    return [("inet", f"in_{run_id}"), ("inet", f"fwd_{run_id}"), ("bridge", f"port_{run_id}")]


def _tag(rules: RunRules) -> str:
    """The comment on a run's inet jump rules: what ``runs_from_listing`` reads back."""
    return f"agentvm run={rules.run_id} addr={rules.address} gw={rules.gateway} ports={','.join(map(str, rules.ports))}"


def _bridge_tag(rules: RunRules) -> str:
    return f"agentvm run={rules.run_id} addr={rules.address} br={rules.bridge}"


def _base_chains(t: str) -> list[str]:
    lines = []
    for family, priority in (("inet", INET_PRIORITY), ("bridge", BRIDGE_PRIORITY)):
        lines.append(f"add table {family} {t}")
        for hook in BASE_CHAINS:
            lines.append(
                f"add chain {family} {t} {hook} {{ type filter hook {hook} priority {priority}; policy accept; }}"
            )
    return lines


def _inet_rules(t: str, rules: RunRules) -> list[str]:
    vm, gw = rules.address, rules.gateway
    ports = ", ".join(map(str, rules.ports))
    into, fwd, tag = f"in_{rules.run_id}", f"fwd_{rules.run_id}", _tag(rules)
    lines = [
        f'add rule inet {t} input ip saddr {vm} jump {into} comment "{tag}"',
        f'add rule inet {t} forward ip saddr {vm} jump {fwd} comment "{tag}"',
        f'add rule inet {t} {into} ct state established,related counter accept comment "established"',
        f'add rule inet {t} {into} ip daddr {gw} tcp dport {{ {ports} }} ct state new counter accept comment "proxy"',
    ]
    for chain, purpose in ((into, "deny-input"), (fwd, "deny-forward")):
        lines += [
            f'add rule inet {t} {chain} meta l4proto tcp counter reject with tcp reset comment "{purpose}"',
            f'add rule inet {t} {chain} counter reject with icmpx type admin-prohibited comment "{purpose}"',
        ]
    return lines


def _bridge_rules(t: str, rules: RunRules) -> list[str]:
    vm, port, chain, btag = rules.address, rules.port, f"port_{rules.run_id}", _bridge_tag(rules)
    return [
        f'add rule bridge {t} input iifname "{port}" jump {chain} comment "{btag}"',
        f'add rule bridge {t} forward iifname "{port}" counter drop comment "{btag} lateral"',
        f'add rule bridge {t} forward oifname "{port}" counter drop comment "{btag} lateral"',
        f"add rule bridge {t} {chain} ether type arp arp saddr ip {vm} accept",
        f"add rule bridge {t} {chain} ether type ip ip saddr {vm} accept",
        f'add rule bridge {t} {chain} counter drop comment "spoofed"',
    ]


def _checked(rules: RunRules) -> RunRules:
    checked = RunRules(
        run_id=check_run_id(rules.run_id),
        address=check_ipv4(rules.address, "VM address"),
        gateway=check_ipv4(rules.gateway, "gateway"),
        ports=check_ports(rules.ports),
        bridge=check_ifname(rules.bridge, "bridge"),
        port=check_ifname(rules.port, "bridge port"),
    )
    if len(_tag(checked)) > MAX_COMMENT or len(_bridge_tag(checked) + " lateral") > MAX_COMMENT:
        raise EgressError(f"run id {rules.run_id!r} is too long for the rules' comments (at most 128 bytes)")
    return checked


def render(rules: RunRules, *, table: str = TABLE, replace_handles: Sequence[tuple[str, str, int]] = ()) -> str:
    """The nft script that installs (or replaces) one run's rules in one transaction.

    The run's chains are created and flushed first; ``replace_handles``: (family, chain, handle) of this run's
    existing jump rules, deleted in the same transaction (re-apply)."""
    t = check_table(table)
    rules = _checked(rules)
    lines = _base_chains(t)
    for family, chain in _chains(rules.run_id):
        lines += [f"add chain {family} {t} {chain}", f"flush chain {family} {t} {chain}"]
    lines += [f"delete rule {family} {t} {chain} handle {handle}" for family, chain, handle in replace_handles]
    lines += _inet_rules(t, rules) + _bridge_rules(t, rules)
    return "\n".join(lines) + "\n"


def _comment_fields(comment: str | None) -> dict[str, str]:
    if not comment or not comment.startswith("agentvm "):
        return {}
    return dict(word.split("=", 1) for word in comment.split()[1:] if "=" in word)


def _comment_run(comment: str | None) -> str | None:
    return _comment_fields(comment).get("run")


def _rules(listing: Listing) -> list[dict[str, Any]]:
    return [obj["rule"] for obj in listing if obj.get("rule")]


def jump_rules(run_id: str, listing: Listing) -> list[tuple[str, str, int]]:
    """(family, chain, handle) of a run's rules in the base chains (its jumps and lateral drops)."""
    return [
        (rule["family"], rule["chain"], int(rule["handle"]))
        for rule in _rules(listing)
        if rule["chain"] in BASE_CHAINS and _comment_run(rule.get("comment")) == run_id
    ]


def render_removal(run_id: str, listing: Listing, *, table: str = TABLE) -> str:
    """The nft script that deletes one run's rules and chains, given both tables' ``nft -j`` objects."""
    t = check_table(table)
    existing = {(obj["chain"]["family"], obj["chain"]["name"]) for obj in listing if "chain" in obj}
    lines = [
        f"delete rule {family} {t} {chain} handle {handle}" for family, chain, handle in jump_rules(run_id, listing)
    ]
    lines += [f"delete chain {f} {t} {c}" for f, c in _chains(check_run_id(run_id)) if (f, c) in existing]
    return "\n".join(lines) + ("\n" if lines else "")


def _iifname(rule: dict[str, Any]) -> str | None:
    for expr in rule.get("expr", []):
        match = expr.get("match")
        if match and match.get("left", {}).get("meta", {}).get("key") == "iifname":
            return str(match.get("right"))
    return None


def runs_from_listing(listing: Listing) -> list[RunRules]:
    """Runs found in ``nft -j`` objects of both tables (the inet input jump and the bridge input jump)."""
    inet: dict[str, dict[str, str]] = {}
    ports: dict[str, tuple[str, str]] = {}
    for rule in _rules(listing):
        fields = _comment_fields(rule.get("comment"))
        if rule["chain"] != "input" or "run" not in fields:
            continue
        if rule["family"] == "inet":
            inet[fields["run"]] = fields
        elif rule["family"] == "bridge":
            ports[fields["run"]] = (fields.get("br", ""), _iifname(rule) or "")
    found = []
    for run_id, fields in sorted(inet.items()):
        bridge, port = ports.get(run_id, ("", ""))
        numbers = tuple(int(p) for p in fields.get("ports", "").split(",") if p.isdigit())
        found.append(RunRules(run_id, fields.get("addr", ""), fields.get("gw", ""), numbers, bridge, port))
    return found


def _purpose(rule: dict[str, Any], run_id: str, chains: set[str]) -> str:
    """What a rule counts for ``run_id`` ('' when it is not one of its counting rules)."""
    comment = rule.get("comment") or ""
    if rule["chain"] in chains:
        return comment
    if rule["chain"] == "forward" and _comment_run(comment) == run_id and comment.endswith(" lateral"):
        return "lateral"
    return ""


def counters_from_listing(run_id: str, listing: Listing) -> dict[str, Counter]:
    """Packets/bytes per purpose: proxy, established, deny-input, deny-forward, spoofed, lateral."""
    chains = {name for _, name in _chains(check_run_id(run_id))}
    totals: dict[str, Counter] = {}
    for rule in _rules(listing):
        name = _purpose(rule, run_id, chains)
        for expr in rule.get("expr", []):
            if "counter" in expr and name:
                value = Counter(int(expr["counter"].get("packets", 0)), int(expr["counter"].get("bytes", 0)))
                totals[name] = totals.get(name, Counter()) + value
    return totals
