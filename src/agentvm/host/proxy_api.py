"""The API side of a run's credential proxy: one aiohttp server per upstream, on the host's bridge address.

The VM may present the token as ``x-api-key``, ``Authorization: Bearer`` or ``x-goog-api-key``; each is compared
by the caller's ``token_ok`` (constant time); all three are removed and the real credential is set in the header
the provider expects. The request goes to the upstream's base URL with verified TLS; the answer streams back chunk
by chunk (SSE included); redirects are passed back, never followed. Unknown token: 401, logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from agentvm.host.proxy_http import hop_by_hop
from agentvm.host.proxy_log import EgressLog, Entry
from agentvm.host.proxy_settings import ProxyError, ProxyLimits, ssl_context
from agentvm.host.proxy_upstream import Credential, Upstream

Headers = CIMultiDictProxy[str] | CIMultiDict[str]
log = logging.getLogger("agentvm.proxy")
TOKEN_HEADERS = ("x-api-key", "x-goog-api-key", "authorization")
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


def presented_tokens(headers: Headers) -> list[str]:
    """Every value the VM may have sent as its token (x-api-key, x-goog-api-key, Authorization: Bearer)."""
    found: list[str] = []
    for name in ("x-api-key", "x-goog-api-key"):
        found += headers.getall(name, [])
    for value in headers.getall("authorization", []):
        scheme, _, credential = value.partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            found.append(credential.strip())
    return found


def forward_request_headers(headers: Headers, credential: Credential) -> CIMultiDict[str]:
    """The VM's headers without hop-by-hop ones, Host, Content-Length and any token header; plus the key."""
    drop = hop_by_hop(headers.getall("connection", [])) | {"host", "content-length", "expect", *TOKEN_HEADERS}
    out: CIMultiDict[str] = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)
    out[credential.header] = credential.value()
    return out


def response_headers(headers: Headers) -> CIMultiDict[str]:
    drop = hop_by_hop(headers.getall("connection", [])) | {"content-length"}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=f"agentvm proxy: {text}\n", content_type="text/plain")


def _unauthorized() -> web.Response:
    body = {"type": "error", "error": {"type": "authentication_error", "message": "agentvm proxy: unknown token"}}
    return web.Response(status=401, text=json.dumps(body), content_type="application/json")


class ApiProxy:
    """Serves upstreams (``listen`` once per upstream) until ``stop``."""

    def __init__(
        self,
        token_ok: Callable[[str | None], bool],
        log: EgressLog,
        limits: ProxyLimits,
        *,
        run_id: str = "",
        ca_file: str | None = None,
    ) -> None:
        self.token_ok = token_ok
        self.log = log
        self.limits = limits
        self.run_id = run_id
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None
        self._runners: list[web.AppRunner] = []
        self._relays: set[asyncio.Task[object]] = set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=ssl_context(self._ca_file), limit=self.limits.max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, trust_env=False, skip_auto_headers=_SKIP_AUTO
            )
        return self._session

    async def listen(self, upstream: Upstream, host: str) -> int:
        """Serves ``upstream`` on a new port of ``host``; returns the port."""
        self._client()  # made now: a bad CA bundle fails the start, not the first request
        app = web.Application(client_max_size=self.limits.max_request_bytes)

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(upstream, request)

        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0, logger=server_log)
        await runner.setup()
        self._runners.append(runner)
        try:
            await web.TCPSite(runner, host, 0).start()
        except OSError as exc:
            raise ProxyError(f"cannot listen on {host}: {exc.strerror or exc}") from None
        return int(runner.addresses[-1][1])

    async def stop(self) -> None:
        """Cuts answers in progress at once (aiohttp alone would wait for them), then closes every port."""
        for task in list(self._relays):
            task.cancel()
        if self._relays:
            await asyncio.wait(self._relays, timeout=5)
        for runner in self._runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, upstream: Upstream, request: web.Request) -> web.StreamResponse:
        url = upstream.url
        entry = Entry(
            kind="api",
            upstream=upstream.name,
            method=request.method,
            host=url.host or "",
            port=url.port,
            path=request.raw_path,
        )
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            response = await self._api(upstream, request, entry)
            entry.status = entry.status or response.status
            return response
        finally:
            self._relays.discard(task)
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
        try:
            return await self._exchange(upstream, request, body, entry)
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

    async def _exchange(
        self, upstream: Upstream, request: web.Request, body: bytes, entry: Entry
    ) -> web.StreamResponse:
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.limits.connect_timeout, sock_read=self.limits.read_timeout
        )
        async with self._client().request(
            request.method,
            upstream.target(request.raw_path),
            headers=forward_request_headers(request.headers, upstream.credential),
            data=body or None,
            allow_redirects=False,
            timeout=timeout,
        ) as answer:
            return await self._relay(request, answer, entry)

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
