"""What a run's credential proxy is started with: its options and limits, checked before anything listens."""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from agentvm.host.isolation import EgressPolicy
from agentvm.host.proxy_destinations import Network
from agentvm.host.proxy_forward import ForwardLimits


class ProxyError(RuntimeError):
    """The proxy cannot start as configured (the message says what to change)."""


@dataclass(frozen=True)
class ProxyLimits:
    """Limits of the API side; those of the forward side are in ``forward``."""

    max_request_bytes: int = 64 * 1024 * 1024
    max_response_bytes: int = 4 * 1024 * 1024 * 1024
    connect_timeout: float = 30.0
    read_timeout: float = 600.0  # idle time between two chunks of an upstream answer
    max_connections: int = 256
    forward: ForwardLimits = field(default_factory=ForwardLimits)


class ProxyOptions(TypedDict, total=False):
    """Keyword options of a run's proxy (every one may be left out).

    ``egress``: the forward proxy's allowlist (default deny; ``open``: no forward proxy). ``log_path``: the run's
    egress.log (None: counters only). ``hosts``: fixed name -> addresses for the forward proxy.
    ``blocked_networks``: where the forward proxy never connects (default: the subnet carrying ``bind_host``).
    ``ca_file``: the CA bundle for https upstreams (default: ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE``, else the
    system store).
    """

    egress: EgressPolicy | None
    log_path: Path | None
    run_id: str
    hosts: Mapping[str, Sequence[str]] | None
    blocked_networks: Sequence[str] | None
    ca_file: str | None
    limits: ProxyLimits | None


def check_bind_host(bind_host: str) -> str:
    try:
        address = ipaddress.ip_address(bind_host)
    except ValueError:
        raise ProxyError(
            f"bind_host {bind_host!r} must be an IP address (the host's address on the VMs' bridge)"
        ) from None
    if address.is_unspecified or address.is_multicast:
        raise ProxyError(f"bind_host {bind_host}: the proxy listens on one address only, never on all of them")
    return str(address)


def blocked_networks(bind_host: str, networks: Sequence[str] | None) -> list[Network]:
    """Networks the forward proxy never connects to: given, or the subnet that carries ``bind_host``."""
    if networks is not None:
        return [ipaddress.ip_network(n, strict=False) for n in networks]
    if ipaddress.ip_address(bind_host).is_loopback:
        return []
    return _subnets_of(bind_host)


def _subnets_of(address: str) -> list[Network]:
    try:
        out = subprocess.run(
            ["ip", "-json", "address", "show"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        links = json.loads(out or "[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    return [
        ipaddress.ip_network(f"{address}/{info.get('prefixlen', 32)}", strict=False)
        for link in links
        for info in link.get("addr_info", [])
        if info.get("local") == address
    ]


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verified TLS for https upstreams, against ``ca_file``, the host's CA bundle, or the system store."""
    cafile = ca_file or os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
    if cafile and not Path(cafile).is_file():
        cafile = None
    return ssl.create_default_context(cafile=cafile)  # without a file: the system store
