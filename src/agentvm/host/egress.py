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

The rules themselves (two tables ``inet agentvm`` and ``bridge agentvm``, per-run chains) are described in
``egress_nft``; running ``nft`` and finding the VM's bridge port is ``egress_host``.

In netfilter a drop/reject in any base chain is final: ACCEPT rules of Multipass, of the double or of Docker in
other tables cannot undo it, and nothing the VM does inside itself (``nft flush ruleset``) reaches these rules.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

from agentvm.host import egress_host as host
from agentvm.host.egress_checks import EgressError, check_ifname, check_ipv4, check_ports, check_run_id, check_table
from agentvm.host.egress_nft import (
    TABLE,
    Counter,
    RunRules,
    counters_from_listing,
    jump_rules,
    render,
    render_removal,
    runs_from_listing,
)

__all__ = [
    "TABLE",
    "Counter",
    "EgressError",
    "Probe",
    "RunRules",
    "apply",
    "counters",
    "list_runs",
    "probe",
    "remove",
    "render",
]


@dataclass(frozen=True)
class Probe:
    ok: bool
    problems: tuple[str, ...]
    nft_version: str | None = None

    def summary(self) -> str:
        if self.ok:
            return f"egress rules can be enforced (nftables {self.nft_version})"
        return "egress rules cannot be enforced: " + "; ".join(self.problems)


def _locate(
    run_id: str, address: str, ports: tuple[int, ...], gateway: str | None, bridge: str | None, port: str | None
) -> RunRules:
    """The run's rules with what was not given found on the host (route, bridge, bridge port)."""
    device, source = host.route_to(address)
    bridge = bridge or device
    if not host.is_bridge(bridge):
        raise EgressError(f"{bridge} (the way to {address}) is not a bridge; run VMs must sit on a bridge")
    return RunRules(
        run_id=run_id,
        address=address,
        gateway=check_ipv4(gateway or source, "gateway"),
        ports=ports,
        bridge=check_ifname(bridge, "bridge"),
        port=check_ifname(port or host.bridge_port_of(address, bridge), "bridge port"),
    )


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
    """Installs (or atomically replaces) the run's rules; raises EgressError with nothing half-applied."""
    check_run_id(run_id)
    check_table(table)
    address = check_ipv4(vm_address, "VM address")
    rules = _locate(run_id, address, check_ports(proxy_ports), gateway, bridge, port)
    with host.locked():
        listing = host.listing(table)
        for other in runs_from_listing(listing):
            if other.run_id != run_id and other.address == address:
                raise EgressError(f"{address} already has rules of run {other.run_id}: remove them first")
        host.nft(["-f", "-"], render(rules, table=table, replace_handles=jump_rules(run_id, listing)))
    return rules


def remove(run_id: str, *, table: str = TABLE) -> bool:
    """Idempotent; True when something was removed. The tables go with the last run."""
    check_run_id(run_id)
    check_table(table)
    with host.locked():
        script = render_removal(run_id, host.listing(table), table=table)
        if script:
            host.nft(["-f", "-"], script)
        if not runs_from_listing(host.listing(table)):
            host.drop_tables(table)
    return bool(script)


def list_runs(*, table: str = TABLE) -> list[RunRules]:
    return runs_from_listing(host.listing(table))


def counters(run_id: str, *, table: str = TABLE) -> dict[str, Counter]:
    return counters_from_listing(run_id, host.listing(table))


PROBE_RULES = RunRules("probe", "192.0.2.2", "192.0.2.1", (1,), "probe0", "probe1")


def _missing() -> list[str]:
    """What this Linux host lacks for the rules (root, tools), each with its fix."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root: nftables rules need root (run as root, or EGRESS=open to skip enforcement)")
    for tool, package in (("nft", "nftables"), ("ip", "iproute2"), ("bridge", "iproute2")):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` is missing: apt-get install {package}")
    return problems


def probe() -> Probe:
    """Whether this host can enforce the rules: Linux, root, nft, iproute2, and kernel support (a dry run of
    a complete run's script with ``nft --check``: nothing is loaded). No side effects."""
    system = platform.system()
    if system != "Linux":
        return Probe(False, (f"{system} has no nftables: on macOS load the pf anchor (docs/security-isolation.md)",))
    problems = _missing()
    if problems:
        return Probe(False, tuple(problems))
    try:
        version = host.nft(["--version"]).strip().split(" ")[1]
        host.nft(["--check", "-f", "-"], render(PROBE_RULES, table="agentvm_probe"))
    except (EgressError, IndexError) as exc:
        reason = f"the kernel refuses the rules ({exc}); needs nf_tables with inet, bridge, reject, ct"
        return Probe(False, (reason,))
    return Probe(True, (), version)
