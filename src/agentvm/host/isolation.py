"""Isolation settings of a run: how the agent gets its credential, and where the VM may connect.

API (used by the run pipeline before anything is created; bad values raise ``ValueError`` with the fix)::

    parse_credentials(os.environ.get("CREDENTIALS"))  -> "proxy" | "direct"
    policy = parse_egress(os.environ.get("EGRESS"))     -> EgressPolicy
    policy.mode                                          # "deny" | "allowlist" | "open"
    policy.enforced                                      # True unless open: the host's nftables rules apply
    policy.allowlist.allows(host, port, via="connect")   # the forward proxy's decision
    policy.with_hosts(["api.example.com"])               # e.g. the API host when CREDENTIALS=direct

``EGRESS`` values: empty/unset or ``deny`` (nothing but the host's proxy), ``open`` (no rules at all), or a
comma-separated allowlist: ``example.com`` (exactly that name), ``*.example.com`` (every name below it, not the
name itself), an IP literal (``203.0.113.7``, ``[2001:db8::1]``), each optionally with ``:port``. A rule without
a port allows 443 through CONNECT and 80 for plain-HTTP forward requests; with a port, exactly that port.
Names compare case-insensitively and without one trailing dot. Nothing else matches: no regexes, no ``*``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

CredentialsMode = Literal["proxy", "direct"]
EgressMode = Literal["deny", "allowlist", "open"]
Via = Literal["connect", "http"]

DEFAULT_PORTS: dict[str, int] = {"connect": 443, "http": 80}
MAX_RULES = 256
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_NUMERIC_TLD = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


def parse_credentials(value: str | None) -> CredentialsMode:
    text = (value or "").strip().lower()
    if text in ("", "proxy"):
        return "proxy"
    if text == "direct":
        return "direct"
    raise ValueError(
        f"CREDENTIALS={value!r} is not valid: use CREDENTIALS=proxy (the default: the key stays on the host) "
        "or CREDENTIALS=direct (the key is copied into the VM for the agent's process)"
    )


def normalize_host(raw: str) -> str | None:
    """The canonical form of a host name or IP literal, or None when it is not one.

    Lower case, one trailing dot removed, IP literals in their compressed form (IPv6 without brackets).
    Host names are plain ASCII LDH labels; a name whose last label is numeric (``127.1``, ``0x7f.1``,
    ``2130706433``) is refused because resolvers would read it as an IP address.
    """
    host = raw.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        return _ip_literal(host[1:-1], v6_only=True)
    literal = _ip_literal(host, v6_only=False)
    if literal is not None:
        return literal
    host = host.removesuffix(".")
    if not host or len(host) > 253 or not host.isascii():
        return None
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels) or _NUMERIC_TLD.match(labels[-1]):
        return None
    return host


def _ip_literal(text: str, *, v6_only: bool) -> str | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if v6_only and address.version != 6:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def is_ip_literal(host: str) -> bool:
    return _ip_literal(host, v6_only=False) is not None


def split_host_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port``, or a bare IPv6 literal (no port)."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: an IPv6 literal needs a closing ']'")
        host, rest = text[: end + 1], text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected ':port' after ']'")
        return host, _port(rest[1:], text)
    if text.count(":") > 1:
        return text, None  # a bare IPv6 literal
    if ":" in text:
        host, _, port = text.partition(":")
        return host, _port(port, text)
    return text, None


def _port(text: str, whole: str) -> int:
    if not _PORT.match(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: the port must be a number from 1 to 65535")
    return int(text)


@dataclass(frozen=True)
class HostRule:
    """One allowlist entry: ``host`` exact (``suffix`` False) or every name below it (``suffix`` True)."""

    host: str
    suffix: bool = False
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> HostRule:
        text = entry.strip()
        if text in ("*", "*.") or text.startswith("*:"):
            raise ValueError(f"{entry!r}: '*' alone is not a rule; use EGRESS=open to allow everything")
        suffix = text.startswith("*.")
        host_text, port = split_host_port(text[2:] if suffix else text)
        host = normalize_host(host_text)
        if host is None:
            raise ValueError(
                f"{entry!r} is not a host name, '*.domain' or IP literal (letters, digits, '-' and '.'; "
                "IPv6 in brackets when a port follows)"
            )
        if suffix and is_ip_literal(host):
            raise ValueError(f"{entry!r}: '*.' applies to domain names, not to IP addresses")
        if suffix and "." not in host:
            raise ValueError(f"{entry!r}: '*.' needs a domain with at least two labels (e.g. *.example.com)")
        return cls(host=host, suffix=suffix, port=port)

    def matches(self, host: str, port: int, via: Via) -> bool:
        wanted = self.port if self.port is not None else DEFAULT_PORTS[via]
        if port != wanted:
            return False
        if self.suffix:
            return host.endswith("." + self.host)
        return host == self.host

    def __str__(self) -> str:
        name = f"*.{self.host}" if self.suffix else self.host
        if ":" in name:
            name = f"[{name}]"
        return name if self.port is None else f"{name}:{self.port}"


@dataclass(frozen=True)
class Allowlist:
    rules: tuple[HostRule, ...] = ()

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> Allowlist:
        entries = text.split(",") if isinstance(text, str) else list(text)
        rules = [HostRule.parse(e) for e in entries if e.strip()]
        if len(rules) > MAX_RULES:
            raise ValueError(f"the allowlist has {len(rules)} entries; at most {MAX_RULES} are supported")
        return cls(tuple(dict.fromkeys(rules)))

    def allows(self, host: str, port: int, via: Via = "connect") -> bool:
        """Whether a request for ``host:port`` (as the VM wrote it) may pass."""
        canonical = normalize_host(host)
        if canonical is None:
            return False
        return any(rule.matches(canonical, port, via) for rule in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.rules)


@dataclass(frozen=True)
class EgressPolicy:
    mode: EgressMode
    allowlist: Allowlist = field(default_factory=Allowlist)

    @property
    def enforced(self) -> bool:
        """True when the host must enforce default-deny (nftables / pf) for the run's VM."""
        return self.mode != "open"

    def with_hosts(self, entries: Iterable[str]) -> EgressPolicy:
        """This policy with more allowlist entries (no change in open mode)."""
        if self.mode == "open":
            return self
        merged = Allowlist.parse([*map(str, self.allowlist.rules), *entries])  # deduplicated, at most MAX_RULES
        return EgressPolicy("allowlist" if merged else "deny", merged)

    def describe(self) -> str:
        if self.mode == "allowlist":
            return f"allowlist: {self.allowlist}"
        return self.mode


def parse_egress(value: str | None) -> EgressPolicy:
    text = (value or "").strip()
    if text.lower() in ("", "deny"):
        return EgressPolicy("deny")
    if text.lower() == "open":
        return EgressPolicy("open")
    try:
        allowlist = Allowlist.parse(text)
    except ValueError as exc:
        raise ValueError(
            f"EGRESS: {exc}. Use EGRESS=deny (default), EGRESS=open, or EGRESS=host1,*.domain2,host3:8443"
        ) from None
    return EgressPolicy("allowlist", allowlist) if allowlist else EgressPolicy("deny")
