"""HTTP/1.1 pieces of the host proxy: hop-by-hop headers and host:port text (both sides), and the forward proxy's
own reading of request heads from raw streams and its one-line refusals. Pure functions: nothing here does I/O."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from agentvm.host.isolation import normalize_host, split_host_port
from agentvm.host.proxy_log import Decision

_METHOD = re.compile(r"^[A-Z]{1,16}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
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
ASK_FOR_TOKEN = 'Proxy-Authenticate: Basic realm="agentvm"\r\n'


def hop_by_hop(connection_values: Iterable[str]) -> frozenset[str]:
    """Lower-case names that never cross the proxy: the standard ones and those a ``Connection`` header lists."""
    named = {name.strip().lower() for value in connection_values for name in value.split(",")}
    return HOP_BY_HOP | named


def bracket(host: str) -> str:
    """A host as it is written in a URL or a ``Host`` header (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


def show(host: str, port: int | None) -> str:
    return f"{bracket(host)}:{port}" if port is not None else bracket(host)


class Refusal(Exception):
    """An answer the proxy gives itself (status, one-line text, decision, extra header lines)."""

    def __init__(self, status: int, text: str, decision: Decision = "error", extra: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.decision = decision
        self.extra = extra

    def response(self) -> bytes:
        body = f"agentvm proxy: {self.text}\n".encode()
        head = (
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Error')}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            f"{self.extra}Connection: close\r\n\r\n"
        ).encode()
        return head + body


@dataclass
class Head:
    method: str
    target: str
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]


def parse_head(raw: bytes) -> Head:
    """A request head as read up to and including its blank line; anything unusual is refused (400)."""
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
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credential, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None


def parse_absolute_http(target: str) -> tuple[str, int, str]:
    """``http://authority/path?q`` -> (host, port, origin-form target)."""
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
    host, port = parse_authority(authority)
    return host, port or 80, origin


def parse_authority(text: str) -> tuple[str, int | None]:
    """``host[:port]`` with the host in its canonical form."""
    try:
        raw_host, port = split_host_port(text)
    except ValueError:
        raise Refusal(400, "malformed host:port") from None
    host = normalize_host(raw_host)
    if host is None:
        raise Refusal(400, "malformed host name")
    return host, port


def content_length(head: Head, limit: int) -> int:
    """The request body's length (0 without one); chunked bodies and ambiguous lengths are refused."""
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


def origin_head(head: Head, host: str, port: int, origin: str) -> bytes:
    """The head sent to the origin: origin-form, the checked ``Host``, no hop-by-hop headers, one request only."""
    drop = hop_by_hop(head.values("connection")) | {"host"}
    lines = [f"{head.method} {origin} HTTP/1.1", f"Host: {show(host, port) if port != 80 else bracket(host)}"]
    lines += [f"{k}: {v}" for k, v in head.headers if k.lower() not in drop]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
