"""Where the forward proxy connects: it resolves names itself and never connects to loopback, link-local,
multicast, unspecified or reserved addresses, to an address of this host, or into blocked networks (the run VMs'
own subnet), so that an allowed name cannot lead around the host's rules."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping, Sequence

from agentvm.host.isolation import is_ip_literal, normalize_host
from agentvm.host.proxy_http import Refusal, show

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SPECIAL = ("is_loopback", "is_link_local", "is_multicast", "is_unspecified", "is_reserved")


def is_local_address(address: str) -> bool:
    """True when ``address`` is assigned to this host (binding to it succeeds)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def _within(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Sequence[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


class Destinations:
    """Resolution (``hosts`` first: fixed name -> addresses) and the addresses the proxy never connects to
    (``exempt`` networks are allowed despite the built-in refusals: loopback in tests)."""

    def __init__(
        self, hosts: Mapping[str, Sequence[str]], blocked: Sequence[Network], exempt: Sequence[Network] = ()
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
        """Why the proxy never connects to ``address`` (None: it may)."""
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if _within(ip, self.exempt):
            return None
        for attr in _SPECIAL:
            if getattr(ip, attr):
                return attr.removeprefix("is_").replace("_", "-")
        if str(ip) == "255.255.255.255":
            return "broadcast"
        if _within(ip, self.blocked):
            return "the run VMs' network"
        if is_local_address(str(ip)):
            return "an address of this host"
        return None

    async def connect(
        self, host: str, port: int, *, resolve_timeout: float, connect_timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the first usable address of ``host``; refused (403) when it has none."""
        addresses = await self.resolve(host, port, resolve_timeout)
        reasons = {address: self.refusal(address) for address in addresses}
        usable = [address for address, reason in reasons.items() if reason is None]
        if not usable:
            why = ", ".join(sorted({reason or "" for reason in reasons.values()}))
            raise Refusal(403, f"{host} resolves only to addresses the proxy never connects to ({why})", "denied")
        for address in usable:
            try:
                return await asyncio.wait_for(asyncio.open_connection(address, port), connect_timeout)
            except (OSError, TimeoutError):
                continue
        raise Refusal(502, f"cannot connect to {show(host, port)}")
