"""macOS: the run's default-deny as a pf anchor. Generated text only: agentvm does not load it itself.

API::

    from agentvm.host.egress_pf import pf_anchor
    anchor = pf_anchor(run_id, vm_address, gateway, proxy_ports, interface="bridge100")
    anchor.name       # "agentvm/<run_id>"
    anchor.rules      # pf.conf text for the anchor
    anchor.load       # argv, rules on stdin:  pfctl -a agentvm/<run_id> -f -
    anchor.unload     # argv:                  pfctl -a agentvm/<run_id> -F all
    anchor.commands() # the shell lines (for docs and for a human)

Once per host, the main ruleset must evaluate agentvm's anchors and pf must be enabled (both documented in
docs/security-isolation.md): add ``anchor "agentvm/*"`` to ``/etc/pf.conf``, ``sudo pfctl -f /etc/pf.conf``,
``sudo pfctl -E``. On the shared network every VM sits behind the same interface (``bridge100``), so the rules
key on the VM's IPv4 address only: a VM that changes its address is not held by them (see the doc's gaps).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from agentvm.host.egress_checks import check_ifname, check_ipv4, check_ports, check_run_id

ANCHOR_ROOT = "agentvm"


@dataclass(frozen=True)
class PfAnchor:
    name: str
    rules: str

    @property
    def load(self) -> list[str]:
        return ["pfctl", "-a", self.name, "-f", "-"]

    @property
    def unload(self) -> list[str]:
        return ["pfctl", "-a", self.name, "-F", "all"]

    def commands(self) -> str:
        return (
            f"sudo {shlex.join(self.load)} <<'EOF'\n{self.rules}EOF\n"
            f"sudo {shlex.join(['pfctl', '-a', self.name, '-s', 'rules'])}   # check\n"
            f"sudo {shlex.join(self.unload)}   # at the end of the run\n"
        )


def pf_anchor(
    run_id: str, vm_address: str, gateway: str, proxy_ports: Iterable[int], *, interface: str = "bridge100"
) -> PfAnchor:
    check_run_id(run_id)
    vm, gw = check_ipv4(vm_address, "VM address"), check_ipv4(gateway, "gateway")
    ports = " ".join(map(str, check_ports(proxy_ports)))
    nic = check_ifname(interface, "interface")
    rules = (
        f"# agentvm run {run_id}: {vm} on {nic} reaches only {gw} TCP ports {ports} (the run's proxy)\n"
        f"pass out quick on {nic} inet from {gw} to {vm} keep state\n"
        f"pass in quick on {nic} inet proto tcp from {vm} to {gw} port {{ {ports} }} flags S/SA keep state\n"
        f"block return in quick on {nic} inet from {vm} to any\n"
    )
    return PfAnchor(f"{ANCHOR_ROOT}/{run_id}", rules)
