"""The forward proxy of one run: ``HTTPS_PROXY``/``HTTP_PROXY`` for the VM, limited to the run's allowlist.

* ``CONNECT host:port`` opens a TCP tunnel when the allowlist allows ``host:port`` (443 by default).
* ``GET http://host/path`` (absolute-form, plain HTTP) is forwarded when ``host`` is allowed (80 by default);
  one request per connection: the proxy sends ``Host`` itself (the name it checked) and ``Connection: close``,
  copies exactly ``Content-Length`` bytes of body (chunked request bodies get 411) and relays the answer.
* Every request must carry the run's token in ``Proxy-Authorization`` (``Basic`` with the token as password,
  any user name, or ``Bearer <token>``); otherwise 407. A token of another run or of a stopped proxy is unknown.
* The proxy resolves names itself and never connects to loopback, link-local, multicast, unspecified or reserved
  addresses, to an address of this host, or into the run VMs' own subnet (no detour around the host's rules).
* Refusals are one-line ``text/plain`` bodies. One ``egress.log`` line per request (no headers, no bodies).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agentvm.host.isolation import Allowlist, is_ip_literal, normalize_host, split_host_port
from agentvm.host.proxy_log import Decision, EgressLog, Entry

MAX_HEAD = 32 * 1024
_METHOD = re.compile(r"^[A-Z]{1,16}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_STATUS = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    407: "Proxy Authentication Required",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class ForwardLimits:
    head_timeout: float = 30.0
    connect_timeout: float = 15.0
    resolve_timeout: float = 10.0
    idle_timeout: float = 600.0
    max_connections: int = 256
    max_request_body: int = 64 * 1024 * 1024
    max_response_bytes: int = 4 * 1024 * 1024 * 1024


class Refusal(Exception):
    """An answer the proxy gives itself (status, one-line text, decision)."""

    def __init__(self, status: int, text: str, decision: Decision = "error", extra: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.decision = decision
        self.extra = extra


@dataclass
class Head:
    method: str
    target: str
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]


@dataclass
class Exchange:
    """What the log line of one request needs, filled in as the request proceeds."""

    kind: str = "http"
    method: str = "-"
    host: str = "-"
    port: int | None = None
    path: str | None = None
    status: int = 0
    decision: Decision = "error"
    bytes_in: int = 0
    bytes_out: int = 0


def parse_head(raw: bytes) -> Head:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise Refusal(400, "the request head must be ASCII") from None
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _METHOD.match(parts[0]) or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise Refusal(400, "malformed request line")
    if any(not 0x21 <= ord(c) <= 0x7E for c in parts[1]):
        raise Refusal(400, "malformed request target")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _HEADER_NAME.match(name) or any(ord(c) < 0x20 and c != "\t" for c in value):
            raise Refusal(400, "malformed header line")
        headers.append((name, value.strip(" \t")))
    return Head(parts[0], parts[1], headers)


def proxy_token(head: Head) -> str | None:
    """The token of a Proxy-Authorization header (Basic: the password; Bearer: the credential)."""
    values = head.values("proxy-authorization")
    if len(values) != 1:
        return None
    scheme, _, credential = values[0].partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer":
        return credential or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep else None
    return None


def parse_absolute_http(target: str) -> tuple[str, int, str, str]:
    """``http://authority/path?q`` -> (host, port, Host header value, origin-form target)."""
    if not target.lower().startswith("http://"):
        if target.lower().startswith("https://"):
            raise Refusal(400, "use CONNECT for https (set HTTPS_PROXY), not an https:// request target")
        raise Refusal(400, "this is a forward proxy: use an absolute http:// request target or CONNECT")
    rest = target[7:]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, origin = rest[:cut], rest[cut:]
    if "@" in authority or not authority:
        raise Refusal(400, "the request target must not carry user information")
    if origin.startswith("?") or not origin:
        origin = "/" + origin
    host, port = _authority(authority)
    return host, port or 80, authority, origin


def _authority(text: str) -> tuple[str, int | None]:
    try:
        raw_host, port = split_host_port(text)
    except ValueError:
        raise Refusal(400, "malformed host:port") from None
    host = normalize_host(raw_host)
    if host is None:
        raise Refusal(400, "malformed host name")
    return host, port


class Destinations:
    """Resolution and the addresses the proxy never connects to."""

    def __init__(
        self,
        hosts: Mapping[str, Sequence[str]],
        blocked: Sequence[ipaddress._BaseNetwork],
        exempt: Sequence[ipaddress._BaseNetwork] = (),
    ) -> None:
        self.hosts = {normalize_host(k) or k: tuple(v) for k, v in hosts.items()}
        self.blocked = tuple(blocked)
        self.exempt = tuple(exempt)

    async def resolve(self, host: str, port: int, timeout: float) -> list[str]:
        if is_ip_literal(host):
            return [host]
        if host in self.hosts:
            return list(self.hosts[host])
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        except (OSError, TimeoutError):
            raise Refusal(502, f"cannot resolve {host}") from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def refusal(self, address: str) -> str | None:
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip.version == net.version and ip in net for net in self.exempt):
            return None
        for attr in ("is_loopback", "is_link_local", "is_multicast", "is_unspecified", "is_reserved"):
            if getattr(ip, attr):
                return attr.removeprefix("is_").replace("_", "-")
        if str(ip) == "255.255.255.255":
            return "broadcast"
        if any(ip.version == net.version and ip in net for net in self.blocked):
            return "the run VMs' network"
        if is_local_address(str(ip)):
            return "an address of this host"
        return None


def is_local_address(address: str) -> bool:
    """True when ``address`` is assigned to this host (binding to it succeeds)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


class ForwardProxy:
    def __init__(
        self,
        allowlist: Allowlist,
        token_ok: Callable[[str | None], bool],
        log: EgressLog,
        *,
        hosts: Mapping[str, Sequence[str]] | None = None,
        blocked_networks: Sequence[ipaddress._BaseNetwork] = (),
        exempt_networks: Sequence[ipaddress._BaseNetwork] = (),
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
        self._active = 0

    async def start(self, host: str, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, host, port, limit=MAX_HEAD)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
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
        self._active += 1
        started = time.monotonic()
        ex = Exchange()
        try:
            if self._active > self.limits.max_connections:
                raise Refusal(503, "too many connections through the proxy")
            await self._serve(reader, writer, ex)
        except Refusal as refusal:
            ex.status, ex.decision = refusal.status, refusal.decision
            ex.bytes_out += await _answer(writer, refusal)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            ex.decision = "error" if ex.decision != "allowed" else ex.decision
        finally:
            self._active -= 1
            self._tasks.discard(task)
            writer.close()
            if ex.method != "-" or ex.status:
                self.log.record(_entry(ex, started))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ex: Exchange) -> None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.head_timeout)
        except (asyncio.LimitOverrunError, ValueError):
            ex.method = "?"
            raise Refusal(431, "request head too large") from None
        except (asyncio.IncompleteReadError, TimeoutError):
            return
        ex.bytes_in += len(raw)
        head = parse_head(raw)
        ex.method = head.method
        ex.kind = "connect" if head.method == "CONNECT" else "http"
        if head.method == "CONNECT":
            ex.host, ex.port = _authority(head.target)
            if ex.port is None:
                raise Refusal(400, "CONNECT needs host:port")
        else:
            ex.host, ex.port, _, ex.path = parse_absolute_http(head.target)
        if not self.token_ok(proxy_token(head)):
            raise Refusal(
                407, "the proxy needs this run's token", "unauthorized", 'Proxy-Authenticate: Basic realm="agentvm"\r\n'
            )
        via = "connect" if head.method == "CONNECT" else "http"
        if not self.allowlist.allows(ex.host, ex.port, via):
            raise Refusal(403, f"egress to {_show(ex.host, ex.port)} is not allowed for this run (EGRESS)", "denied")
        upstream_reader, upstream_writer = await self._connect(ex.host, ex.port)
        try:
            if head.method == "CONNECT":
                await self._tunnel(reader, writer, upstream_reader, upstream_writer, ex)
            else:
                await self._forward(head, reader, writer, upstream_reader, upstream_writer, ex)
        finally:
            upstream_writer.close()

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        addresses = await self.destinations.resolve(host, port, self.limits.resolve_timeout)
        usable = [a for a in addresses if self.destinations.refusal(a) is None]
        if not usable:
            reasons = sorted({self.destinations.refusal(a) or "" for a in addresses})
            raise Refusal(
                403, f"{host} resolves only to addresses the proxy never connects to ({', '.join(reasons)})", "denied"
            )
        for address in usable:
            try:
                return await asyncio.wait_for(asyncio.open_connection(address, port), self.limits.connect_timeout)
            except (OSError, TimeoutError):
                continue
        raise Refusal(502, f"cannot connect to {_show(host, port)}")

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        ex: Exchange,
    ) -> None:
        established = b"HTTP/1.1 200 Connection established\r\n\r\n"
        writer.write(established)
        await writer.drain()
        ex.status, ex.decision = 200, "allowed"
        ex.bytes_out += len(established)
        counts = [0, 0]
        await asyncio.gather(
            self._pipe(reader, up_writer, counts, 0, None),
            self._pipe(up_reader, writer, counts, 1, self.limits.max_response_bytes),
            return_exceptions=True,
        )
        ex.bytes_in += counts[0]
        ex.bytes_out += counts[1]

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        counts: list[int],
        slot: int,
        cap: int | None,
        budget: int | None = None,
    ) -> None:
        try:
            while budget is None or budget > 0:
                chunk = await asyncio.wait_for(
                    src.read(65536 if budget is None else min(65536, budget)), self.limits.idle_timeout
                )
                if not chunk:
                    break
                counts[slot] += len(chunk)
                if budget is not None:
                    budget -= len(chunk)
                if cap is not None and counts[slot] > cap:
                    raise ConnectionError("response too large")
                dst.write(chunk)
                await dst.drain()
            if budget is None and dst.can_write_eof():
                dst.write_eof()
        except BaseException:
            dst.close()
            raise

    async def _forward(
        self,
        head: Head,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        ex: Exchange,
    ) -> None:
        length = _content_length(head, self.limits.max_request_body)
        up_writer.write(_origin_head(head, ex.host, ex.port or 80, ex.path or "/"))
        await up_writer.drain()
        counts = [0, 0]
        if length:
            await self._pipe(reader, up_writer, counts, 0, None, budget=length)
        ex.bytes_in += counts[0]
        first = await asyncio.wait_for(up_reader.read(65536), self.limits.idle_timeout)
        match = _STATUS.match(first)
        ex.status, ex.decision = (int(match.group(1)), "allowed") if match else (502, "error")
        writer.write(first)
        counts[1] += len(first)
        try:
            if first:
                await self._pipe(up_reader, writer, counts, 1, self.limits.max_response_bytes)
        finally:
            ex.bytes_out += counts[1]


def _content_length(head: Head, limit: int) -> int:
    if head.values("transfer-encoding"):
        raise Refusal(411, "chunked request bodies are not forwarded; send Content-Length")
    values = head.values("content-length")
    if not values:
        return 0
    if len(set(values)) != 1 or not values[0].isdigit():
        raise Refusal(400, "malformed Content-Length")
    if int(values[0]) > limit:
        raise Refusal(413, "request body too large")
    return int(values[0])


def _origin_head(head: Head, host: str, port: int, origin: str) -> bytes:
    named = {v.strip().lower() for value in head.values("connection") for v in value.split(",")}
    drop = HOP_BY_HOP | named | {"host"}
    lines = [f"{head.method} {origin} HTTP/1.1", f"Host: {_show(host, port) if port != 80 else _bracket(host)}"]
    lines += [f"{k}: {v}" for k, v in head.headers if k.lower() not in drop]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _show(host: str, port: int | None) -> str:
    return f"{_bracket(host)}:{port}" if port is not None else _bracket(host)


async def _answer(writer: asyncio.StreamWriter, refusal: Refusal) -> int:
    body = f"agentvm proxy: {refusal.text}\n".encode()
    head = (
        f"HTTP/1.1 {refusal.status} {REASONS.get(refusal.status, 'Error')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"{refusal.extra}Connection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(ConnectionError, RuntimeError):
        writer.write(head + body)
        await asyncio.wait_for(writer.drain(), 5)
    return len(head) + len(body)


def _entry(ex: Exchange, started: float) -> Entry:
    return Entry(
        kind=ex.kind,
        method=ex.method,
        host=ex.host,
        port=ex.port,
        path=ex.path,
        status=ex.status,
        decision=ex.decision,
        bytes_in=ex.bytes_in,
        bytes_out=ex.bytes_out,
        duration_ms=(time.monotonic() - started) * 1000,
    )
