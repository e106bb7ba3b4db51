"""Network fixtures of the isolation tests (root): namespaces, veths and a bridge that the tests create and
always remove, whatever happens.

``outside``  an "outside host": a network namespace behind a veth pair, with its own address in 198.19.N.0/24,
             serving plain HTTP on 80, 443 and 8080 and DNS (dnsmasq answering every A query) on port 53.
``lab``      a test bridge (gateway 198.18.N.1, a DNS server on the gateway like Multipass's dnsmasq, iptables
             FORWARD ACCEPT rules for the bridge like Multipass's) with two "VM" namespaces on it (198.18.N.2 and
             .3). Routing between the bridge and the outside host uses per-interface forwarding only.
``table``    a private nftables table name for this module (the real default ``agentvm`` is left alone).

Tests that need root (these fixtures, nft) are marked ``double`` in their modules: ``make test-unit`` deselects
them, and a full run where they cannot run fails with the reason instead of skipping them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).parent
NETCLIENT = HERE / "netclient.py"
OUTSIDE_SERVER = HERE / "outside_server.py"
OUTSIDE_PORTS = (80, 443, 8080)
DNS_ANSWER = "198.51.100.99"
DROP_WAIT = 1.0  # how long a probe waits for an answer the rules drop silently (a veth answers in microseconds)
Probe = tuple[str, str, object]  # (kind, target, arg) of netclient.py


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("ip", "nft", "iptables", "dnsmasq", "curl", "bridge"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


def require_root_network() -> None:
    """Fails (never skips) where the host-network tests cannot run; only a unit-only run skips them."""
    reason = _unavailable()
    if reason is None:
        return
    if os.environ.get("AGENTVM_UNIT_ONLY") == "1":
        pytest.skip(reason)
    pytest.fail(
        f"host-network isolation tests cannot run here: {reason} (make test-unit runs the others)", pytrace=False
    )


def probe_argv(probes: list[Probe], timeout: float) -> list[str]:
    """netclient.py's arguments for running ``probes`` at once."""
    return ["probes", str(timeout), *(str(part) for probe in probes for part in probe)]


def probe_results(probes: list[Probe], stdout: str) -> dict[Probe, bool]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(probes), stdout
    return {probe: line["ok"] for probe, line in zip(probes, lines, strict=True)}


def sh(*argv: str, check: bool = True, input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, input=input, timeout=timeout)


class Cleanup:
    """Undo steps run last-in first-out; each step runs even when an earlier one failed."""

    def __init__(self) -> None:
        self.steps: list[Callable[[], object]] = []

    def add(self, step: Callable[[], object]) -> None:
        self.steps.append(step)

    def run(self) -> None:
        while self.steps:
            with contextlib.suppress(Exception):
                self.steps.pop()()


def _free_index() -> int:
    used = []
    for route in json.loads(sh("ip", "-json", "-4", "route", "show", "table", "all").stdout or "[]"):
        with contextlib.suppress(ValueError):
            if route.get("dst") not in (None, "default"):
                used.append(ipaddress.ip_network(route["dst"], strict=False))
    for _ in range(200):
        n = random.randint(0, 255)
        nets = [ipaddress.ip_network(f"198.18.{n}.0/24"), ipaddress.ip_network(f"198.19.{n}.0/24")]
        if not any(a.overlaps(b) for a in nets for b in used if b.prefixlen > 0):
            return n
    raise RuntimeError("no free 198.18/198.19 test subnet")


def _forwarding(ifname: str) -> None:
    Path(f"/proc/sys/net/ipv4/conf/{ifname}/forwarding").write_text("1\n")


def _start(argv: list[str], cleanup: Cleanup, ready: str | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    cleanup.add(stop)
    if ready is not None:
        line = proc.stdout.readline() if proc.stdout else ""
        if ready not in line:
            raise RuntimeError(f"{argv[0]} did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc


def _dnsmasq(address: str, workdir: Path, netns: str | None, cleanup: Cleanup) -> None:
    argv = [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        f"--listen-address={address}",
        "--except-interface=lo",
        "--port=53",
        f"--address=/#/{DNS_ANSWER}",
        f"--pid-file={workdir / f'dnsmasq-{address}.pid'}",
        "--user=root",
    ]
    proc = _start(["ip", "netns", "exec", netns, *argv] if netns else argv, cleanup)
    client = [sys.executable, str(NETCLIENT), "dns", address, "probe.test", "0.2"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until it answers
        probe = sh(*(["ip", "netns", "exec", netns, *client] if netns else client), check=False)
        if probe.returncode == 0:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq on {address} exited: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    raise RuntimeError(f"dnsmasq on {address} does not answer")


@dataclass
class Outside:
    tag: str
    netns: str
    host_side: str
    host_address: str  # the host's end of the veth
    address: str  # the outside host

    @property
    def network(self) -> str:
        return str(ipaddress.ip_network(f"{self.address}/24", strict=False))


@dataclass
class Lab:
    outside: Outside
    bridge: str
    gateway: str
    vms: list[tuple[str, str, str]] = field(default_factory=list)  # (netns, address, host-side port)

    def vm_ns(self, i: int = 0) -> str:
        return self.vms[i][0]

    def vm_address(self, i: int = 0) -> str:
        return self.vms[i][1]

    def vm_port(self, i: int = 0) -> str:
        return self.vms[i][2]

    def in_vm(self, *argv: str, i: int = 0, input: str | None = None, timeout: float = 30):
        return sh("ip", "netns", "exec", self.vm_ns(i), *argv, check=False, input=input, timeout=timeout)

    def probe(self, kind: str, target: str, arg: object, i: int = 0, timeout: float = 2.0) -> bool:
        """True when the probe succeeds from VM ``i`` (a TCP connection opens / a DNS answer arrives)."""
        return self.probes([(kind, target, arg)], i=i, timeout=timeout)[(kind, target, arg)]

    def probes(self, probes: list[Probe], i: int = 0, timeout: float = 2.0) -> dict[Probe, bool]:
        """Each probe's success from VM ``i``; all run at once, so the timeouts of blocked ones overlap."""
        proc = self.in_vm(sys.executable, str(NETCLIENT), *probe_argv(probes, timeout), i=i)
        assert proc.returncode == 0, proc.stderr
        return probe_results(probes, proc.stdout)

    def curl(self, url: str, proxy: str | None = None, token: str | None = None, *extra: str, i: int = 0):
        """curl from VM ``i``; the proxy credentials travel in a config on stdin, never on a command line."""
        config = ""
        if proxy:
            config += f'proxy = "{proxy}"\n'
        if token:
            config += f'proxy-user = "agentvm:{token}"\n'
        return self.in_vm("curl", "-sS", "--max-time", "10", "-K", "-", *extra, url, i=i, input=config)


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Iterator[Outside]:
    require_root_network()
    tag = uuid.uuid4().hex[:6]
    n = _free_index()
    out = Outside(tag, f"avo-{tag}", f"avo{tag}", f"198.19.{n}.1", f"198.19.{n}.2")
    work = tmp_path_factory.mktemp("outside")
    cleanup = Cleanup()
    try:
        sh("ip", "netns", "add", out.netns)
        cleanup.add(lambda: sh("ip", "netns", "delete", out.netns))
        sh("ip", "link", "add", out.host_side, "type", "veth", "peer", "name", "eth0", "netns", out.netns)
        cleanup.add(lambda: sh("ip", "link", "delete", out.host_side))
        sh("ip", "address", "add", f"{out.host_address}/24", "dev", out.host_side)
        sh("ip", "link", "set", out.host_side, "up")
        _forwarding(out.host_side)
        for argv in (
            ["address", "add", f"{out.address}/24", "dev", "eth0"],
            ["link", "set", "eth0", "up"],
            ["link", "set", "lo", "up"],
            ["route", "add", "default", "via", out.host_address],
        ):
            sh("ip", "-n", out.netns, *argv)
        server = [sys.executable, str(OUTSIDE_SERVER), out.address, *map(str, OUTSIDE_PORTS)]
        _start(["ip", "netns", "exec", out.netns, *server], cleanup, ready="ready")
        _dnsmasq(out.address, work, out.netns, cleanup)
        yield out
    finally:
        cleanup.run()


@pytest.fixture(scope="module")
def lab(outside: Outside, tmp_path_factory) -> Iterator[Lab]:
    tag = outside.tag
    n = outside.address.split(".")[2]
    lab = Lab(outside, f"avb{tag}", f"198.18.{n}.1")
    work = tmp_path_factory.mktemp("lab")
    cleanup = Cleanup()
    try:
        sh("ip", "link", "add", lab.bridge, "type", "bridge")
        cleanup.add(lambda: sh("ip", "link", "delete", lab.bridge))
        sh("ip", "address", "add", f"{lab.gateway}/24", "dev", lab.bridge)
        sh("ip", "link", "set", lab.bridge, "up")
        _forwarding(lab.bridge)
        comment = ["-m", "comment", "--comment", f"agentvm-isolation-test {lab.bridge}"]
        for direction in ("-i", "-o"):  # like Multipass: ACCEPT whatever crosses the bridge
            rule = ["FORWARD", direction, lab.bridge, *comment, "-j", "ACCEPT"]
            sh("iptables", "-w", "-I", *rule)
            cleanup.add(lambda rule=rule: sh("iptables", "-w", "-D", *rule))
        for i, (letter, host) in enumerate((("v", 2), ("w", 3))):
            netns, port, address = f"av{letter}-{tag}", f"av{letter}{tag}", f"198.18.{n}.{host}"
            sh("ip", "netns", "add", netns)
            cleanup.add(lambda netns=netns: sh("ip", "netns", "delete", netns))
            sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns)
            cleanup.add(lambda port=port: sh("ip", "link", "delete", port))
            sh("ip", "link", "set", port, "master", lab.bridge, "up")
            for argv in (
                ["address", "add", f"{address}/24", "dev", "eth0"],
                ["link", "set", "eth0", "up"],
                ["link", "set", "lo", "up"],
                ["route", "add", "default", "via", lab.gateway],
            ):
                sh("ip", "-n", netns, *argv)
            lab.vms.append((netns, address, port))
            assert i == len(lab.vms) - 1
        _dnsmasq(lab.gateway, work, None, cleanup)
        yield lab
    finally:
        cleanup.run()


@pytest.fixture(scope="module")
def table() -> Iterator[str]:
    name = f"agentvm_t{uuid.uuid4().hex[:8]}"
    yield name
    for family in ("inet", "bridge"):
        sh("nft", "delete", "table", family, name, check=False)


def nft_text(family: str, table: str) -> str:
    """``nft list table`` output, or '' when the table does not exist."""
    proc = sh("nft", "list", "table", family, table, check=False)
    return proc.stdout if proc.returncode == 0 else ""
