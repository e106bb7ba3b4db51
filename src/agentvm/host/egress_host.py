"""The host side of egress rules: running ``nft`` (one lock for every change), and finding where a VM sits
(the bridge, the host's address on it, the bridge port its frames arrive on) from iproute2's JSON output."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agentvm.host.egress_checks import EgressError, check_table
from agentvm.host.egress_nft import FAMILIES

NFT_TIMEOUT = 30
IP_TIMEOUT = 10


def nft(args: Sequence[str], script: str | None = None) -> str:
    """``nft ARGS`` (the script on stdin); raises EgressError with nft's message."""
    exe = shutil.which("nft")
    if exe is None:
        raise EgressError("nft is not installed: apt-get install nftables (or run with EGRESS=open)")
    try:
        proc = subprocess.run(
            [exe, *args], input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise EgressError(f"nft {' '.join(args)} did not finish in {NFT_TIMEOUT} s") from None
    if proc.returncode != 0:
        raise EgressError(f"nft {' '.join(args)} failed: {proc.stderr.strip()[:2000]}")
    return proc.stdout


def listing(table: str) -> list[dict[str, Any]]:
    """Both tables' objects (``[]`` for a table that does not exist)."""
    objects: list[dict[str, Any]] = []
    for family in FAMILIES:
        try:
            out = nft(["-j", "list", "table", family, check_table(table)])
        except EgressError as exc:
            if "No such file or directory" in str(exc):
                continue
            raise
        objects += json.loads(out or "{}").get("nftables", [])
    return objects


def drop_tables(table: str) -> None:
    for family in FAMILIES:
        with contextlib.suppress(EgressError):
            nft(["delete", "table", family, check_table(table)])


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One host-wide lock for every change of agentvm's tables (a lock file per table would pile up)."""
    folder = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    fd = os.open(folder / "agentvm-egress.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ip_json(args: Sequence[str], tool: str = "ip") -> list[dict[str, Any]]:
    exe = shutil.which(tool)
    if exe is None:
        raise EgressError(f"`{tool}` (iproute2) is missing: apt-get install iproute2")
    proc = subprocess.run([exe, "-json", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise EgressError(f"{tool} {' '.join(args)} failed: {proc.stderr.strip()[:500]}")
    return json.loads(proc.stdout or "[]")


def route_to(address: str) -> tuple[str, str]:
    """(device, the host's source address) for a directly attached VM address."""
    routes = ip_json(["route", "get", address])
    if not routes:
        raise EgressError(f"no route to the VM address {address}")
    route = routes[0]
    if route.get("gateway") or route.get("type") == "local":
        raise EgressError(f"{address} is not on a network attached to this host (no VM bridge leads to it)")
    return str(route["dev"]), str(route["prefsrc"])


def is_bridge(device: str) -> bool:
    return Path(f"/sys/class/net/{device}/bridge").is_dir()


def bridge_port_of(address: str, bridge: str, timeout: float = 3.0) -> str:
    """The bridge port (tap/veth) whose frames carry ``address``: neighbour MAC, then the bridge's fdb."""
    deadline = time.monotonic() + timeout
    while True:
        mac = _neighbour_mac(address, bridge)
        if mac:
            for entry in ip_json(["fdb", "show", "br", bridge], tool="bridge"):
                if entry.get("mac") == mac and entry.get("master") == bridge and entry.get("ifname") != bridge:
                    return str(entry["ifname"])
        if time.monotonic() > deadline:
            raise EgressError(
                f"cannot tell which port of {bridge} carries {address} (no ARP answer or fdb entry): "
                "is the VM running? Give port= explicitly."
            )
        _nudge(address)
        time.sleep(0.1)


def _neighbour_mac(address: str, bridge: str) -> str | None:
    for entry in ip_json(["neigh", "show", address, "dev", bridge]):
        if entry.get("lladdr") and entry.get("state") not in (["FAILED"], ["INCOMPLETE"]):
            return str(entry["lladdr"]).lower()
    return None


def _nudge(address: str) -> None:
    """Make the kernel resolve the VM's MAC (one UDP datagram to the discard port triggers ARP)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"", (address, 9))
