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

API requests: the VM may present the token as ``x-api-key``, ``Authorization: Bearer`` or ``x-goog-api-key``;
each is compared in constant time; all three are removed and the real credential is set in the header the
provider expects. The request goes to the upstream's base URL (https with verified TLS against the host's CA
bundle: ``ca_file``, else ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE``, else the system store; plain http only to
loopback or an address of this host, unless the upstream says ``allow_plain_http``). Responses stream back chunk
by chunk (SSE included); redirects are passed back, never followed. Unknown token: 401, logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from agentvm.host.isolation import EgressPolicy, is_ip_literal
from agentvm.host.proxy_forward import HOP_BY_HOP, ForwardLimits, ForwardProxy, is_local_address
from agentvm.host.proxy_log import EgressLog, Entry, ProxyCounters

__all__ = [
    "AsyncCredentialProxy",
    "Credential",
    "CredentialProxy",
    "ProxyCounters",
    "ProxyError",
    "ProxyLimits",
    "Secret",
    "Upstream",
    "upstream_for_variable",
]

log = logging.getLogger("agentvm.proxy")
TOKEN_HEADERS = ("x-api-key", "x-goog-api-key", "authorization")
PROXY_USER = "agentvm"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_SKIP_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class _Redacted(logging.Filter):
    """aiohttp's own server log, reduced to the error's type: its texts may quote header lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        kind = record.exc_info[1].__class__.__name__ if record.exc_info and record.exc_info[1] else "error"
        record.msg, record.args = "refused a malformed request (%s)", (kind,)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


server_log = logging.getLogger("agentvm.proxy.server")
server_log.addFilter(_Redacted())


class ProxyError(RuntimeError):
    """The proxy cannot start as configured (the message says what to change)."""


class Secret:
    """A credential value that does not show itself in repr/str/logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value or any(c in value for c in "\r\n\0"):
            raise ValueError("a credential must be a non-empty single-line string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class Credential:
    """Where the real credential goes: ``header: [scheme ]secret``."""

    header: str
    secret: Secret
    scheme: str = ""

    @classmethod
    def anthropic(cls, key: str) -> Credential:
        return cls("x-api-key", Secret(key))

    @classmethod
    def bearer(cls, key: str) -> Credential:
        return cls("authorization", Secret(key), "Bearer")

    @classmethod
    def google(cls, key: str) -> Credential:
        return cls("x-goog-api-key", Secret(key))

    def value(self) -> str:
        return f"{self.scheme} {self.secret.reveal()}" if self.scheme else self.secret.reveal()


@dataclass(frozen=True)
class Upstream:
    """One model API the run may use, served on its own port (so the agent's own paths stay unchanged).

    ``token_vars`` get the token in the VM's environment, ``base_url_vars`` the proxy's URL plus ``vm_path``.
    """

    name: str
    base_url: str
    credential: Credential
    token_vars: tuple[str, ...] = ()
    base_url_vars: tuple[str, ...] = ()
    vm_path: str = ""
    allow_plain_http: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"upstream name {self.name!r}: lower-case letters, digits and '-', at most 32")
        url = URL(self.base_url)
        if url.scheme not in ("https", "http") or not url.host or url.query_string or url.fragment or url.user:
            raise ValueError(f"upstream {self.name}: base URL must be http(s)://host[:port][/path], no query/user")
        if url.scheme == "http" and not self.allow_plain_http and not _is_host_local(url.host):
            raise ValueError(
                f"upstream {self.name}: plain http is allowed only to loopback or an address of this host; "
                "use https (or allow_plain_http=True for a test upstream)"
            )

    @property
    def url(self) -> URL:
        return URL(self.base_url)

    def target(self, raw_path: str) -> URL:
        """The upstream URL for a request path (+ query) as the VM sent it; the host never changes."""
        base = self.url
        origin = str(base.origin())
        return URL(origin + base.raw_path.rstrip("/") + raw_path, encoded=True)


def _is_host_local(host: str) -> bool:
    if host == "localhost":
        return True
    if not is_ip_literal(host):
        return False
    return ipaddress.ip_address(host).is_loopback or is_local_address(host)


@dataclass(frozen=True)
class _Provider:
    base_url: str
    base_url_vars: tuple[str, ...]
    vm_path: str = ""


PROVIDERS: dict[str, _Provider] = {
    "anthropic": _Provider("https://api.anthropic.com", ("ANTHROPIC_BASE_URL",)),
    "google": _Provider("https://generativelanguage.googleapis.com", ("GOOGLE_GEMINI_BASE_URL",)),
    "openai": _Provider("https://api.openai.com", ("OPENAI_BASE_URL",), "/v1"),
}
# credential variable -> (provider, header, scheme)
CREDENTIAL_VARIABLES: dict[str, tuple[str, str, str]] = {
    "ANTHROPIC_API_KEY": ("anthropic", "x-api-key", ""),
    "ANTHROPIC_AUTH_TOKEN": ("anthropic", "authorization", "Bearer"),
    "GEMINI_API_KEY": ("google", "x-goog-api-key", ""),
    "GOOGLE_API_KEY": ("google", "x-goog-api-key", ""),
    "OPENAI_API_KEY": ("openai", "authorization", "Bearer"),
    "CODEX_API_KEY": ("openai", "authorization", "Bearer"),
}


def upstream_for_variable(variable: str, secret: str, base_url: str | None = None) -> Upstream:
    """The upstream for an agent's credential variable (``ANTHROPIC_API_KEY`` ...); ``base_url`` overrides the
    provider's public endpoint (e.g. the host's ``ANTHROPIC_BASE_URL``, without the ``/v1`` of OpenAI's)."""
    try:
        provider, header, scheme = CREDENTIAL_VARIABLES[variable]
    except KeyError:
        known = ", ".join(sorted(CREDENTIAL_VARIABLES))
        raise ValueError(f"no proxy mapping for {variable}: known are {known}; or use CREDENTIALS=direct") from None
    spec = PROVIDERS[provider]
    return Upstream(
        name=provider,
        base_url=(base_url or spec.base_url).rstrip("/").removesuffix(spec.vm_path) or spec.base_url,
        credential=Credential(header, Secret(secret), scheme),
        token_vars=(variable,),
        base_url_vars=spec.base_url_vars,
        vm_path=spec.vm_path,
    )


@dataclass(frozen=True)
class ProxyLimits:
    max_request_bytes: int = 64 * 1024 * 1024
    max_response_bytes: int = 4 * 1024 * 1024 * 1024
    connect_timeout: float = 30.0
    read_timeout: float = 600.0  # idle time between two chunks of an upstream answer
    max_connections: int = 256
    forward: ForwardLimits = field(default_factory=ForwardLimits)


def presented_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> list[str]:
    """Every value the VM may have sent as its token (x-api-key, x-goog-api-key, Authorization: Bearer)."""
    found: list[str] = []
    for name in ("x-api-key", "x-goog-api-key"):
        found += headers.getall(name, [])
    for value in headers.getall("authorization", []):
        scheme, _, credential = value.partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            found.append(credential.strip())
    return found


def forward_request_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], credential: Credential
) -> CIMultiDict[str]:
    """The VM's headers without hop-by-hop ones, Host, Content-Length and any token header; plus the key."""
    named = {v.strip().lower() for value in headers.getall("connection", []) for v in value.split(",")}
    drop = HOP_BY_HOP | named | {"host", "content-length", "expect", *TOKEN_HEADERS}
    out: CIMultiDict[str] = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)
    out[credential.header] = credential.value()
    return out


def response_headers(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    named = {v.strip().lower() for value in headers.getall("connection", []) for v in value.split(",")}
    drop = HOP_BY_HOP | named | {"content-length"}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    cafile = ca_file or os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
    if cafile and not Path(cafile).is_file():
        cafile = None
    context = ssl.create_default_context(cafile=cafile)
    if cafile is None:
        context.load_default_certs()
    return context


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=f"agentvm proxy: {text}\n", content_type="text/plain")


def _unauthorized() -> web.Response:
    body = {"type": "error", "error": {"type": "authentication_error", "message": "agentvm proxy: unknown token"}}
    return web.Response(status=401, text=json.dumps(body), content_type="application/json")


class AsyncCredentialProxy:
    """The proxy inside a running asyncio loop; see the module docstring for the synchronous wrapper."""

    def __init__(
        self,
        bind_host: str,
        upstreams: Sequence[Upstream] = (),
        *,
        egress: EgressPolicy | None = None,
        log_path: Path | None = None,
        run_id: str = "",
        hosts: Mapping[str, Sequence[str]] | None = None,
        blocked_networks: Sequence[str] | None = None,
        ca_file: str | None = None,
        limits: ProxyLimits | None = None,
    ) -> None:
        self.bind_host = _check_bind_host(bind_host)
        names = [u.name for u in upstreams]
        if len(set(names)) != len(names):
            raise ProxyError(f"upstream names must be unique: {names}")
        self.upstreams = {u.name: u for u in upstreams}
        self.egress = egress or EgressPolicy("deny")
        self.run_id = run_id
        self.limits = limits or ProxyLimits()
        self.token = "agentvm-" + secrets.token_urlsafe(32)
        self._token_bytes = self.token.encode()
        self._ca_file = ca_file
        self._log_path = log_path
        self._hosts = hosts or {}
        self._blocked = _blocked(self.bind_host, blocked_networks)
        self.log: EgressLog | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runners: list[web.AppRunner] = []
        self._forward: ForwardProxy | None = None
        self.api_ports: dict[str, int] = {}
        self.forward_port: int | None = None
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> AsyncCredentialProxy:
        self.log = EgressLog(self._log_path)
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def _start(self) -> None:
        assert self.log is not None
        if self.upstreams:
            connector = aiohttp.TCPConnector(ssl=_ssl_context(self._ca_file), limit=self.limits.max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, trust_env=False, skip_auto_headers=_SKIP_AUTO
            )
        for upstream in self.upstreams.values():
            self.api_ports[upstream.name] = await self._listen(upstream)
        if self.egress.mode != "open":
            self._forward = ForwardProxy(
                self.egress.allowlist,
                self.token_ok,
                self.log,
                hosts=self._hosts,
                blocked_networks=self._blocked,
                limits=self.limits.forward,
            )
            try:
                self.forward_port = await self._forward.start(self.bind_host)
            except OSError as exc:
                raise ProxyError(f"cannot listen on {self.bind_host}: {exc.strerror or exc}") from None

    async def _listen(self, upstream: Upstream) -> int:
        app = web.Application(client_max_size=self.limits.max_request_bytes)

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(upstream, request)

        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0, logger=server_log)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.bind_host, 0)
        try:
            await site.start()
        except OSError as exc:
            raise ProxyError(f"cannot listen on {self.bind_host}: {exc.strerror or exc}") from None
        return int(runner.addresses[-1][1])

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.token, self._token_bytes = "", b""  # nothing matches any more, even before the ports close
        if self._forward is not None:
            await self._forward.stop()
        for runner in self._runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self.log is not None:
            self.log.close()

    # -- facts for the run -----------------------------------------------------------------------

    @property
    def ports(self) -> tuple[int, ...]:
        ports = [*self.api_ports.values()]
        if self.forward_port is not None:
            ports.append(self.forward_port)
        return tuple(ports)

    def _host_in_url(self) -> str:
        return f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host

    def base_url(self, name: str) -> str:
        return f"http://{self._host_in_url()}:{self.api_ports[name]}"

    @property
    def proxy_url(self) -> str | None:
        if self.forward_port is None:
            return None
        return f"http://{PROXY_USER}:{self.token}@{self._host_in_url()}:{self.forward_port}"

    def vm_env(self) -> dict[str, str]:
        """Environment for the agent's process in the VM. Holds the token: deliver it like a secret."""
        env: dict[str, str] = {}
        for upstream in self.upstreams.values():
            for var in upstream.token_vars:
                env[var] = self.token
            for var in upstream.base_url_vars:
                env[var] = self.base_url(upstream.name) + upstream.vm_path
        proxy = self.proxy_url
        if proxy is not None:
            for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
                env[var] = proxy
            no_proxy = ",".join(dict.fromkeys([self.bind_host, "localhost", "127.0.0.1"]))
            env["NO_PROXY"] = env["no_proxy"] = no_proxy
            env["NODE_USE_ENV_PROXY"] = "1"  # Node >= 24: fetch/http honour HTTP(S)_PROXY
        return env

    def counters(self) -> ProxyCounters:
        return self.log.counters() if self.log is not None else ProxyCounters()

    def token_ok(self, candidate: str | None) -> bool:
        if not candidate or not self._token_bytes:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token_bytes)

    # -- API requests ----------------------------------------------------------------------------

    async def _handle(self, upstream: Upstream, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        url = upstream.url
        entry = Entry(
            kind="api",
            upstream=upstream.name,
            method=request.method,
            host=url.host or "",
            port=url.port,
            path=request.raw_path,
            status=0,
            decision="error",
        )
        try:
            response = await self._api(upstream, request, entry)
            entry.status = entry.status or response.status
            return response
        finally:
            entry.duration_ms = (time.monotonic() - started) * 1000
            assert self.log is not None
            self.log.record(entry)

    async def _api(self, upstream: Upstream, request: web.Request, entry: Entry) -> web.StreamResponse:
        if request.method == "CONNECT" or not request.raw_path.startswith("/"):
            return _text(400, "this port is the model API; send origin-form requests (use HTTPS_PROXY for others)")
        if not any(self.token_ok(t) for t in presented_tokens(request.headers)):
            entry.decision = "unauthorized"
            log.warning("run %s: refused %s %s: unknown token", self.run_id, request.method, request.path[:200])
            return _unauthorized()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _text(413, "request body too large")
        entry.bytes_in = len(body)
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.limits.connect_timeout, sock_read=self.limits.read_timeout
        )
        try:
            async with self._session.request(
                request.method,
                upstream.target(request.raw_path),
                headers=forward_request_headers(request.headers, upstream.credential),
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
            ) as answer:
                return await self._relay(request, answer, entry)
        except aiohttp.ClientSSLError:
            return _text(502, f"TLS verification of {upstream.name} failed (check the host's CA bundle)")
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            if entry.status:
                raise  # already streaming: cut the connection, the client sees a truncated answer
            return _text(502, f"cannot reach {upstream.name}: {type(exc).__name__}")
        except TimeoutError:
            if entry.status:
                raise
            return _text(504, f"{upstream.name} did not answer in time")

    async def _relay(self, request: web.Request, answer: aiohttp.ClientResponse, entry: Entry) -> web.StreamResponse:
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        response.headers.extend(response_headers(answer.headers))
        if answer.content_length is not None:
            response.content_length = answer.content_length
        entry.status, entry.decision = answer.status, "allowed"
        await response.prepare(request)
        async for chunk in answer.content.iter_any():
            entry.bytes_out += len(chunk)
            if entry.bytes_out > self.limits.max_response_bytes:
                entry.decision = "error"
                log.warning("run %s: answer of %s cut at the size limit", self.run_id, request.path[:200])
                if request.transport is not None:
                    request.transport.close()  # the client sees a truncated answer, never a complete-looking one
                return response
            await response.write(chunk)
        await response.write_eof()
        return response


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
        egress: EgressPolicy | None = None,
        log_path: Path | None = None,
        run_id: str = "",
        hosts: Mapping[str, Sequence[str]] | None = None,
        blocked_networks: Sequence[str] | None = None,
        ca_file: str | None = None,
        limits: ProxyLimits | None = None,
        start_timeout: float = 15.0,
    ) -> CredentialProxy:
        inner = AsyncCredentialProxy(
            bind_host,
            list(upstreams),
            egress=egress,
            log_path=log_path,
            run_id=run_id,
            hosts=hosts,
            blocked_networks=blocked_networks,
            ca_file=ca_file,
            limits=limits,
        )
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"agentvm-proxy-{run_id or 'run'}", daemon=True)
        thread.start()
        proxy = cls(inner, loop, thread)
        try:
            asyncio.run_coroutine_threadsafe(inner.start(), loop).result(start_timeout)
        except BaseException:
            proxy._shutdown_loop()
            raise
        return proxy

    def stop(self, timeout: float = 15.0) -> None:
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

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


def _check_bind_host(bind_host: str) -> str:
    try:
        address = ipaddress.ip_address(bind_host)
    except ValueError:
        raise ProxyError(
            f"bind_host {bind_host!r} must be an IP address (the host's address on the VMs' bridge)"
        ) from None
    if address.is_unspecified or address.is_multicast:
        raise ProxyError(f"bind_host {bind_host}: the proxy listens on one address only, never on all of them")
    return str(address)


def _blocked(bind_host: str, networks: Sequence[str] | None) -> list[ipaddress._BaseNetwork]:
    """Networks the forward proxy never connects to: given, or the subnet that carries ``bind_host``."""
    if networks is not None:
        return [ipaddress.ip_network(n, strict=False) for n in networks]
    if ipaddress.ip_address(bind_host).is_loopback:
        return []
    return _subnets_of(bind_host)


def _subnets_of(address: str) -> list[ipaddress._BaseNetwork]:
    try:
        out = subprocess.run(
            ["ip", "-json", "address", "show"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        links = json.loads(out or "[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    found = []
    for link in links:
        for info in link.get("addr_info", []):
            if info.get("local") == address:
                found.append(ipaddress.ip_network(f"{address}/{info.get('prefixlen', 32)}", strict=False))
    return found
