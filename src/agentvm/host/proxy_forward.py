"""The forward proxy of one run: ``HTTPS_PROXY``/``HTTP_PROXY`` for the VM, limited to the run's allowlist.

* ``CONNECT host:port`` opens a TCP tunnel when the allowlist allows ``host:port`` (443 by default).
* ``GET http://host/path`` (absolute-form, plain HTTP) is forwarded when ``host`` is allowed (80 by default);
  one request per connection: the proxy sends ``Host`` itself (the name it checked) and ``Connection: close``,
  copies exactly ``Content-Length`` bytes of body (chunked request bodies get 411) and relays the answer.
* Every request must carry the run's token in ``Proxy-Authorization`` (``Basic`` with the token as password,
  any user name, or ``Bearer <token>``); otherwise 407. A token of another run or of a stopped proxy is unknown.
* Destinations are resolved and filtered by ``proxy_destinations`` (no loopback, no host address, no VM subnet).
* Refusals are one-line ``text/plain`` bodies. One ``egress.log`` line per request (no headers, no bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agentvm.host.isolation import Allowlist
from agentvm.host.proxy_destinations import Destinations, Network
from agentvm.host.proxy_http import (
    ASK_FOR_TOKEN,
    Head,
    Refusal,
    content_length,
    origin_head,
    parse_absolute_http,
    parse_authority,
    parse_head,
    proxy_token,
    show,
)
from agentvm.host.proxy_log import EgressLog, Entry

MAX_HEAD = 32 * 1024
CHUNK = 65536
_STATUS = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})")


@dataclass(frozen=True)
class ForwardLimits:
    head_timeout: float = 30.0
    connect_timeout: float = 15.0
    resolve_timeout: float = 10.0
    idle_timeout: float = 600.0
    max_connections: int = 256
    max_request_body: int = 64 * 1024 * 1024
    max_response_bytes: int = 4 * 1024 * 1024 * 1024


@dataclass(frozen=True)
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class Flow:
    """Bytes one way through the proxy: counted as they pass; more than ``cap`` cuts the connection;
    ``budget``: copy exactly that many, then stop (without half-closing the other side)."""

    cap: int | None = None
    budget: int | None = None
    moved: int = 0


class ForwardProxy:
    def __init__(
        self,
        allowlist: Allowlist,
        token_ok: Callable[[str | None], bool],
        log: EgressLog,
        *,
        hosts: Mapping[str, Sequence[str]] | None = None,
        blocked_networks: Sequence[Network] = (),
        exempt_networks: Sequence[Network] = (),
        limits: ForwardLimits | None = None,
    ) -> None:
        """``hosts``: fixed name -> addresses (used before DNS); ``exempt_networks``: destinations allowed
        despite the built-in refusals (loopback in tests; an operator's explicit choice)."""
        self.allowlist = allowlist
        self.token_ok = token_ok
        self.log = log
        self.destinations = Destinations(hosts or {}, blocked_networks, exempt_networks)
        self.limits = limits or ForwardLimits()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str) -> int:
        self._server = await asyncio.start_server(self._accept, host, 0, limit=MAX_HEAD)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Closes the port and cuts every open connection (tunnels included)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        entry = Entry()
        try:
            if len(self._tasks) > self.limits.max_connections:
                raise Refusal(503, "too many connections through the proxy")
            await self._serve(Conn(reader, writer), entry)
        except Refusal as refusal:
            entry.status, entry.decision = refusal.status, refusal.decision
            entry.bytes_out += await _answer(writer, refusal)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the decision so far stands: "allowed" once the exchange began, "error" before
        finally:
            self._tasks.discard(task)
            writer.close()
            if entry.method != "-" or entry.status:
                self.log.record(entry)

    async def _serve(self, client: Conn, entry: Entry) -> None:
        head = await self._read_head(client.reader, entry)
        if head is None:
            return
        self._check(head, entry)
        assert entry.port is not None
        upstream = Conn(
            *await self.destinations.connect(
                entry.host,
                entry.port,
                resolve_timeout=self.limits.resolve_timeout,
                connect_timeout=self.limits.connect_timeout,
            )
        )
        try:
            if head.method == "CONNECT":
                await self._tunnel(client, upstream, entry)
            else:
                await self._forward(head, client, upstream, entry)
        finally:
            upstream.writer.close()

    async def _read_head(self, reader: asyncio.StreamReader, entry: Entry) -> Head | None:
        """The request head (None: the client went away or was silent); the entry learns what it asked for."""
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.head_timeout)
        except (asyncio.LimitOverrunError, ValueError):
            entry.method = "?"
            raise Refusal(431, "request head too large") from None
        except (asyncio.IncompleteReadError, TimeoutError):
            return None
        entry.bytes_in += len(raw)
        head = parse_head(raw)
        entry.method = head.method
        if head.method == "CONNECT":
            entry.kind = "connect"
            entry.host, entry.port = parse_authority(head.target)
            if entry.port is None:
                raise Refusal(400, "CONNECT needs host:port")
        else:
            entry.host, entry.port, entry.path = parse_absolute_http(head.target)
        return head

    def _check(self, head: Head, entry: Entry) -> None:
        """The run's token first (407), then the allowlist (403)."""
        if not self.token_ok(proxy_token(head)):
            raise Refusal(407, "the proxy needs this run's token", "unauthorized", ASK_FOR_TOKEN)
        assert entry.port is not None
        if not self.allowlist.allows(entry.host, entry.port, "connect" if entry.kind == "connect" else "http"):
            where = show(entry.host, entry.port)
            raise Refusal(403, f"egress to {where} is not allowed for this run (EGRESS)", "denied")

    async def _tunnel(self, client: Conn, upstream: Conn, entry: Entry) -> None:
        established = b"HTTP/1.1 200 Connection established\r\n\r\n"
        client.writer.write(established)
        await client.writer.drain()
        entry.status, entry.decision = 200, "allowed"
        entry.bytes_out += len(established)
        up, down = Flow(), Flow(cap=self.limits.max_response_bytes)
        await asyncio.gather(
            self._pipe(client.reader, upstream.writer, up),
            self._pipe(upstream.reader, client.writer, down),
            return_exceptions=True,
        )
        entry.bytes_in += up.moved
        entry.bytes_out += down.moved

    async def _forward(self, head: Head, client: Conn, upstream: Conn, entry: Entry) -> None:
        length = content_length(head, self.limits.max_request_body)
        upstream.writer.write(origin_head(head, entry.host, entry.port or 80, entry.path or "/"))
        await upstream.writer.drain()
        up = Flow(budget=length)
        if length:
            await self._pipe(client.reader, upstream.writer, up)
        entry.bytes_in += up.moved
        first = await asyncio.wait_for(upstream.reader.read(CHUNK), self.limits.idle_timeout)
        match = _STATUS.match(first)
        entry.status, entry.decision = (int(match.group(1)), "allowed") if match else (502, "error")
        client.writer.write(first)
        down = Flow(cap=self.limits.max_response_bytes, moved=len(first))
        try:
            if first:
                await self._pipe(upstream.reader, client.writer, down)
        finally:
            entry.bytes_out += down.moved

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, flow: Flow) -> None:
        try:
            while flow.budget is None or flow.moved < flow.budget:
                size = CHUNK if flow.budget is None else min(CHUNK, flow.budget - flow.moved)
                chunk = await asyncio.wait_for(src.read(size), self.limits.idle_timeout)
                if not chunk:
                    break
                flow.moved += len(chunk)
                if flow.cap is not None and flow.moved > flow.cap:
                    raise ConnectionError("response too large")
                dst.write(chunk)
                await dst.drain()
            if flow.budget is None and dst.can_write_eof():
                dst.write_eof()
        except BaseException:
            dst.close()
            raise


async def _answer(writer: asyncio.StreamWriter, refusal: Refusal) -> int:
    data = refusal.response()
    with contextlib.suppress(ConnectionError, RuntimeError):
        writer.write(data)
        await asyncio.wait_for(writer.drain(), 5)
    return len(data)
