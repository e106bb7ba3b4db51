"""The run's isolation, set up once the clone is up and before anything of the run enters it:

- the **credential proxy** on the host address the VM reaches (``CREDENTIALS=proxy``, the default): the agent
  gets a per-run token and the proxy's URL as its API base URL; the real key never enters the VM;
- **default-deny egress** for the VM's address (``EGRESS=deny``, the default; ``EGRESS=host,…`` allows names
  through the proxy; ``EGRESS=open`` sets nothing), enforced on the host with nftables;
- the environment the agent's process gets in the VM (tokens, base URLs, proxy variables, or with
  ``CREDENTIALS=direct`` the credential itself), delivered like a secret.

The playbook waits for it (task ``[isolate]``); the pipeline calls ``setup()`` when that task starts and
``teardown()`` after the VM is deleted. Where enforcement cannot be set up, the run says so loudly and the
record says ``enforced: false``: never a silent downgrade.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agentvm.host import egress, egress_host
from agentvm.host.isolation import EgressPolicy
from agentvm.host.proxy import CredentialProxy, upstream_for_variable
from agentvm.textsafe import Redactor


class IsolationError(Exception):
    """Isolation could not be set up: the run must not go on."""


class Isolation:
    def __init__(
        self,
        run_id: str,
        credentials_mode: str,
        policy: EgressPolicy,
        secrets: Mapping[str, str],
        host_env: Mapping[str, str],
        log_path: Path,
        redactor: Redactor,
        say: Callable[[str], None],
    ) -> None:
        self.run_id = run_id
        self.mode = credentials_mode
        self.policy = policy
        self.secrets = dict(secrets)
        self.host_env = host_env
        self.log_path = log_path
        self.redactor = redactor
        self.say = say
        self.proxy: CredentialProxy | None = None
        self.enforced = False
        self.note = ""
        self.rules_applied = False
        self.dropped: int | None = None

    @property
    def needed(self) -> bool:
        """False when there is nothing to set up (direct credentials and open egress)."""
        return (self.mode == "proxy" and bool(self.secrets)) or self.policy.mode != "open"

    def _upstreams(self) -> tuple[list[Any], dict[str, str]]:
        """(the proxied credentials as upstreams, the credentials delivered as they are)."""
        upstreams, direct = [], {}
        for name, value in self.secrets.items():
            if self.mode != "proxy":
                direct[name] = value
                continue
            try:
                probe = upstream_for_variable(name, value)
            except ValueError:
                direct[name] = value  # no provider for this variable (a custom agent's own key)
                continue
            base = next((self.host_env[v] for v in probe.base_url_vars if self.host_env.get(v)), None)
            upstreams.append(upstream_for_variable(name, value, base_url=base))
        return upstreams, direct

    def setup(self, vm_ip: str | None) -> dict[str, str]:
        """Start the proxy, apply the rules; the environment for the agent's process in the VM."""
        upstreams, direct = self._upstreams()
        if not self.needed:
            return direct
        if not vm_ip:
            raise IsolationError("the clone has no IPv4 address: cannot isolate it")
        try:
            _device, bind_host = egress_host.route_to(vm_ip)
        except egress.EgressError as exc:
            raise IsolationError(f"cannot find the host's address on the clone's network: {exc}") from None
        self.proxy = CredentialProxy.start(
            bind_host, upstreams, egress=self.policy, log_path=self.log_path, run_id=self.run_id
        )
        env = {**direct, **self.proxy.vm_env()}
        self.redactor.add("PROXY_TOKEN", self.proxy.token)
        if self.policy.enforced:
            self._enforce(vm_ip, bind_host)
        return env

    def _enforce(self, vm_ip: str, bind_host: str) -> None:
        assert self.proxy is not None
        found = egress.probe()
        if not found.ok:
            self.note = f"egress is NOT enforced on this host: {found.summary()}"
            self.say(f"WARNING: {self.note}; the VM can reach the network directly (docs/security.md)")
            return
        try:
            egress.apply(self.run_id, vm_ip, self.proxy.ports, gateway=bind_host)
        except egress.EgressError as exc:
            raise IsolationError(f"the egress rules could not be applied: {exc}") from None
        self.rules_applied = self.enforced = True

    def teardown(self) -> None:
        """Remove the rules and stop the proxy (idempotent; never raises)."""
        if self.rules_applied:
            with contextlib.suppress(egress.EgressError, OSError):
                self.dropped = self._dropped()
                egress.remove(self.run_id)
            self.rules_applied = False
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy.stop()

    def _dropped(self) -> int:
        counts = egress.counters(self.run_id)
        return sum(c.packets for name, c in counts.items() if name.startswith(("deny", "spoofed", "lateral")))

    def summary(self) -> dict[str, Any]:
        """The record's ``egress`` field."""
        counters = self.proxy.counters().as_dict() if self.proxy is not None else {}
        out: dict[str, Any] = {
            "mode": self.policy.mode,
            "allowed_hosts": [str(r) for r in self.policy.allowlist.rules],
            "enforced": self.enforced,
            "allowed": int(counters.get("allowed", 0)),
            "denied": int(counters.get("denied", 0)) + int(counters.get("unauthorized", 0)),
            "dropped_packets": self.dropped,
        }
        if self.note:
            out["note"] = self.note
        return out


def write_env(path: Path, env: Mapping[str, str]) -> None:
    """The VM environment as a 0600 JSON file (the secrets file the playbook streams into the VM)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dict(env), fh)
