"""A run's credential proxy inside a running asyncio loop: the token, the API side (``proxy_api``) and the
forward side (``proxy_forward``) on the host's bridge address, and what the VM's environment must say to use them.
``agentvm.host.proxy.CredentialProxy`` runs it on a thread of its own for synchronous callers."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence
from typing import Unpack

from agentvm.host.isolation import EgressPolicy
from agentvm.host.proxy_api import ApiProxy
from agentvm.host.proxy_forward import ForwardProxy
from agentvm.host.proxy_http import bracket
from agentvm.host.proxy_log import EgressLog, ProxyCounters
from agentvm.host.proxy_settings import ProxyError, ProxyLimits, ProxyOptions, blocked_networks, check_bind_host
from agentvm.host.proxy_upstream import Upstream

PROXY_USER = "agentvm"
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")


class AsyncCredentialProxy:
    """``await AsyncCredentialProxy(bind_host, upstreams, **options).start()`` / ``await .stop()``."""

    def __init__(self, bind_host: str, upstreams: Sequence[Upstream] = (), **options: Unpack[ProxyOptions]) -> None:
        unknown = sorted(set(options) - ProxyOptions.__optional_keys__)
        if unknown:
            raise TypeError(f"unknown proxy options {unknown}; known are {sorted(ProxyOptions.__optional_keys__)}")
        self.bind_host = check_bind_host(bind_host)
        names = [u.name for u in upstreams]
        if len(set(names)) != len(names):
            raise ProxyError(f"upstream names must be unique: {names}")
        self.upstreams = {u.name: u for u in upstreams}
        self.egress = options.get("egress") or EgressPolicy("deny")
        self.run_id = options.get("run_id", "")
        self.limits = options.get("limits") or ProxyLimits()
        self.token = "agentvm-" + secrets.token_urlsafe(32)
        self._token_bytes = self.token.encode()
        self._options = options
        self._blocked = blocked_networks(self.bind_host, options.get("blocked_networks"))
        self.log: EgressLog | None = None
        self._api: ApiProxy | None = None
        self._forward: ForwardProxy | None = None
        self.api_ports: dict[str, int] = {}
        self.forward_port: int | None = None
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> AsyncCredentialProxy:
        """Listening on every port; raises ProxyError with nothing left running."""
        self.log = EgressLog(self._options.get("log_path"))
        try:
            await self._start(self.log)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self, log: EgressLog) -> None:
        self._api = ApiProxy(self.token_ok, log, self.limits, run_id=self.run_id, ca_file=self._options.get("ca_file"))
        for upstream in self.upstreams.values():
            self.api_ports[upstream.name] = await self._api.listen(upstream, self.bind_host)
        if self.egress.mode == "open":
            return
        self._forward = ForwardProxy(
            self.egress.allowlist,
            self.token_ok,
            log,
            hosts=self._options.get("hosts") or {},
            blocked_networks=self._blocked,
            limits=self.limits.forward,
        )
        try:
            self.forward_port = await self._forward.start(self.bind_host)
        except OSError as exc:
            raise ProxyError(f"cannot listen on {self.bind_host}: {exc.strerror or exc}") from None

    async def stop(self) -> None:
        """Idempotent: the token dies first (nothing matches it any more), then every port closes."""
        if self._stopped:
            return
        self._stopped = True
        self.token, self._token_bytes = "", b""
        if self._forward is not None:
            await self._forward.stop()
        if self._api is not None:
            await self._api.stop()
        if self.log is not None:
            self.log.close()

    def token_ok(self, candidate: str | None) -> bool:
        if not candidate or not self._token_bytes:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token_bytes)

    # -- facts for the run -----------------------------------------------------------------------

    @property
    def ports(self) -> tuple[int, ...]:
        forward = () if self.forward_port is None else (self.forward_port,)
        return (*self.api_ports.values(), *forward)

    def base_url(self, name: str) -> str:
        return f"http://{bracket(self.bind_host)}:{self.api_ports[name]}"

    @property
    def proxy_url(self) -> str | None:
        if self.forward_port is None:
            return None
        return f"http://{PROXY_USER}:{self.token}@{bracket(self.bind_host)}:{self.forward_port}"

    def vm_env(self) -> dict[str, str]:
        """Environment for the agent's process in the VM. Holds the token: deliver it like a secret."""
        env: dict[str, str] = {}
        for upstream in self.upstreams.values():
            env.update(dict.fromkeys(upstream.token_vars, self.token))
            env.update(dict.fromkeys(upstream.base_url_vars, self.base_url(upstream.name) + upstream.vm_path))
        proxy = self.proxy_url
        if proxy is not None:
            env.update(dict.fromkeys(PROXY_VARS, proxy))
            no_proxy = ",".join(dict.fromkeys([self.bind_host, "localhost", "127.0.0.1"]))
            env["NO_PROXY"] = env["no_proxy"] = no_proxy
            env["NODE_USE_ENV_PROXY"] = "1"  # Node >= 24: fetch/http honour HTTP(S)_PROXY
        return env

    def counters(self) -> ProxyCounters:
        return self.log.counters() if self.log is not None else ProxyCounters()
