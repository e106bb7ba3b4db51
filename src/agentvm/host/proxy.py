"""Host-side credential proxy of one run: the API key stays on the host; the VM gets a per-run token.

API (what the run pipeline calls; everything else here is internal)::

    from agentvm.host.isolation import parse_egress
    from agentvm.host.proxy import CredentialProxy, upstream_for_variable

    proxy = CredentialProxy.start(
        bind_host=gateway,                       # the host's address on the VMs' bridge; never 0.0.0.0 / ::
        upstreams=[upstream_for_variable("ANTHROPIC_API_KEY", key, base_url=None)],  # [] if CREDENTIALS=direct
        egress=parse_egress(env.get("EGRESS")),  # allowlist of the forward proxy; "open": no forward proxy
        log_path=run_dir / "egress.log",         # JSON lines, mode 0600; None: no file (counters only)
        run_id=run_id,
        # optional: hosts={"name": ["addr"]} (fixed resolution for the forward proxy), blocked_networks=[...]
        # (default: the subnet carrying bind_host), ca_file=..., limits=ProxyLimits(...)
    )                                            # -> listening; raises ProxyError (nothing left running)
    proxy.api_ports / proxy.forward_port         # {upstream name: port} / the forward proxy's port (None: open)
    proxy.token                                  # random per-run token: the agent's "API key"
    proxy.ports                                  # every listening port (pass to egress.apply)
    proxy.base_url("anthropic")                  # http://<bind_host>:<port> for that upstream
    proxy.proxy_url                              # http://agentvm:<token>@<bind_host>:<port>, None when open
    proxy.vm_env()                               # env for the agent in the VM: token vars, base URL vars,
                                                 #   HTTPS_PROXY/HTTP_PROXY (+ lower case), NO_PROXY (a secret:
                                                 #   it holds the token)
    proxy.counters()                             # ProxyCounters (.as_dict()): allowed, denied, unauthorized,
                                                 #   errors, api_requests, egress_requests, bytes_in, bytes_out
    proxy.stop()                                 # idempotent; closes every port; the token dies with it

``CredentialProxy`` runs its own asyncio loop in a daemon thread (for the synchronous pipeline);
``AsyncCredentialProxy`` is the same thing for callers already in asyncio (``await AsyncCredentialProxy(...)
.start()`` / ``await .stop()``).

The API side is ``proxy_api``, the forward side ``proxy_forward``, the options ``proxy_settings``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Unpack

from agentvm.host.proxy_async import AsyncCredentialProxy
from agentvm.host.proxy_log import ProxyCounters
from agentvm.host.proxy_settings import ProxyError, ProxyLimits, ProxyOptions
from agentvm.host.proxy_upstream import Credential, Secret, Upstream, upstream_for_variable

__all__ = [
    "AsyncCredentialProxy",
    "Credential",
    "CredentialProxy",
    "ProxyCounters",
    "ProxyError",
    "ProxyLimits",
    "ProxyOptions",
    "Secret",
    "Upstream",
    "upstream_for_variable",
]


class CredentialProxy:
    """``AsyncCredentialProxy`` on a private event loop in a daemon thread (start/stop from any thread)."""

    def __init__(self, inner: AsyncCredentialProxy, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._inner = inner
        self._loop = loop
        self._thread = thread

    @classmethod
    def start(
        cls,
        bind_host: str,
        upstreams: Iterable[Upstream] = (),
        *,
        start_timeout: float = 15.0,
        **options: Unpack[ProxyOptions],
    ) -> CredentialProxy:
        """Listening when it returns; raises ProxyError (or ValueError for bad options) with nothing running."""
        inner = AsyncCredentialProxy(bind_host, list(upstreams), **options)
        loop = asyncio.new_event_loop()
        name = f"agentvm-proxy-{options.get('run_id') or 'run'}"
        thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
        thread.start()
        proxy = cls(inner, loop, thread)
        try:
            asyncio.run_coroutine_threadsafe(inner.start(), loop).result(start_timeout)
        except BaseException:
            proxy._shutdown_loop()
            raise
        return proxy

    def stop(self, timeout: float = 15.0) -> None:
        """Idempotent; closes every port; the token dies with it."""
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._inner.stop(), self._loop).result(timeout)
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> CredentialProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def token(self) -> str:
        return self._inner.token

    @property
    def bind_host(self) -> str:
        return self._inner.bind_host

    @property
    def ports(self) -> tuple[int, ...]:
        return self._inner.ports

    @property
    def api_ports(self) -> dict[str, int]:
        return dict(self._inner.api_ports)

    @property
    def forward_port(self) -> int | None:
        return self._inner.forward_port

    @property
    def proxy_url(self) -> str | None:
        return self._inner.proxy_url

    def base_url(self, name: str) -> str:
        return self._inner.base_url(name)

    def vm_env(self) -> dict[str, str]:
        return self._inner.vm_env()

    def counters(self) -> ProxyCounters:
        return self._inner.counters()
