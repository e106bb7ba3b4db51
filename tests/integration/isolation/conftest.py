"""Network fixtures of the isolation tests (root): namespaces, veths and a bridge that the tests create and
always remove, whatever happens.

``outside``  an "outside host": a network namespace behind a veth pair, with its own address in 198.19.N.0/24,
             serving plain HTTP on 80, 443 and 8080 and DNS (dnsmasq answering every A query) on port 53.
``lab``      a test bridge (gateway 198.18.N.1, a DNS server on the gateway like Multipass's dnsmasq, iptables
             FORWARD ACCEPT rules for the bridge like Multipass's) with two "VM" namespaces on it (198.18.N.2 and
             .3). Routing between the bridge and the outside host uses per-interface forwarding only.
``table``    a private nftables table name for this module (the real default ``agentvm`` is left alone).
``isolated_runs``  ``agentvm run`` on the double (a fake golden per module) with AGENT=custom running vm_agent.py
             from the run's workspace; its orders are the prompt. While a run lasts, the harness flushes the VM's
             firewall from the host (in the VM's network namespace) when the agent asks, for guests without nft.
``model_mock``  the model-API mock on the host's address on the double's bridge (where the proxy forwards).

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
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from simulator.mocks.model_api import MockServer, make_server
from tests.conftest import DOUBLE_ADMIN, REPO

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


# -- `agentvm run` on the Multipass double, isolated (the test_run_*.py modules) -----------------------------

VM_AGENT = HERE / "vm_agent.py"


@dataclass
class RunResult:
    """One finished ``agentvm run``: its process, run folder, ``result.json`` and the agent's report."""

    proc: subprocess.CompletedProcess
    folder: Path
    record: dict
    report: dict
    requests: list[dict] = field(default_factory=list)  # what the model-API mock received during the run
    responses: list[dict] = field(default_factory=list)
    rules_left: bool = False  # whether the host's ruleset still named the run right after it
    stolen: dict = field(default_factory=dict)  # what the run was given of an earlier run's

    @property
    def run_id(self) -> str:
        return self.folder.name

    def egress_log(self) -> list[dict]:
        path = self.folder / "egress.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class IsolatedRuns:
    """``agentvm run`` (AGENT=custom running vm_agent.py from the run's workspace) against a fake golden.

    ``run(steps, env)`` gives the agent its orders (vm_agent.py's steps) as the prompt; ``popen`` starts one
    without waiting (its own process group, for ``kill -9``)."""

    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.env = env
        self.runs = root / "runs"
        self.workspace = root / "workspace"
        self.workspace.mkdir()
        for source in (VM_AGENT, NETCLIENT):
            shutil.copy(source, self.workspace / source.name)
        self.trace = root / "trace.jsonl"

    def full_env(self, env: dict[str, str] | None) -> dict[str, str]:
        full = {**self.env, "AGENTVM_RUNS_DIR": str(self.runs), "PYTHONPATH": str(REPO / "src")}
        for name in ("CREDENTIALS", "EGRESS", "AGENT_CREDENTIALS", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
            full.pop(name, None)  # the defaults, unless a test names them
        full.update(AGENT="custom", AGENT_COMMAND="python3 vm_agent.py", MULTIPASS_DOUBLE_TRACE=str(self.trace))
        full.update(env or {})
        return full

    def argv(self, steps: list) -> list[str]:
        return [
            sys.executable,
            "-m",
            "agentvm",
            "run",
            "--workspace",
            str(self.workspace),
            json.dumps({"steps": steps}),
        ]

    def folders(self) -> set[Path]:
        """The run folders (not the runs' staging folders beside them)."""
        return {p for p in self.runs.iterdir() if not p.name.startswith(".")} if self.runs.exists() else set()

    def run(self, steps: list, env: dict[str, str] | None = None, timeout: float = 900) -> RunResult:
        """One run to its end; meanwhile, flushes the VM's firewall when the agent asks (vm_agent's host_flush)."""
        before = self.folders()
        with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
            proc = self.popen(steps, env, stdout=out_file, stderr=err_file)
            try:
                self._serve(proc, before, time.monotonic() + timeout)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)
                    proc.wait(30)
            out, err = (_read_all(f) for f in (out_file, err_file))
        [folder] = self.folders() - before
        record = json.loads((folder / "result.json").read_text())
        report_file = folder / "output" / "report.json"
        report = json.loads(report_file.read_text()) if report_file.exists() else {}
        return RunResult(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), folder, record, report)

    def _serve(self, proc: subprocess.Popen, before: set[Path], deadline: float) -> None:
        flushed = False
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("agentvm run did not finish in time")
            if not flushed:
                flushed = self._flush_if_asked(before)
            time.sleep(0.2)

    def leader_pid(self, run_id: str) -> int | None:
        """The init process of the run's instance in the double (None until it runs)."""
        name = f"{self.env['AGENTVM_PREFIX']}-run-{run_id}"
        runtime = Path(self.env["MULTIPASS_DOUBLE_DATA"]) / "instances" / name / "runtime.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            return int(json.loads(runtime.read_text())["leader_pid"])
        return None

    def _flush_if_asked(self, before: set[Path]) -> bool:
        """Root in the VM's network namespace: ``nft flush ruleset`` and ``iptables -F``, when the agent asks."""
        new = self.folders() - before
        leader = self.leader_pid(next(iter(new)).name) if new else None
        if leader is None:
            return False
        tmp = Path(f"/proc/{leader}/root/tmp")
        if not (tmp / "agentvm-flush-request").exists():
            return False
        said = {}
        for argv in (["nft", "flush", "ruleset"], ["iptables", "-F"]):
            done = sh("nsenter", "-t", str(leader), "-n", *argv, check=False)
            said[argv[0]] = {"rc": done.returncode, "stderr": done.stderr[-500:]}
        (tmp / "agentvm-flush-done.tmp").write_text(json.dumps(said))
        (tmp / "agentvm-flush-done.tmp").rename(tmp / "agentvm-flush-done")
        return True

    def popen(self, steps: list, env: dict[str, str] | None = None, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
        """Started in a process group of its own (so a test can ``kill -9`` all of it)."""
        return subprocess.Popen(
            self.argv(steps),
            env=self.full_env(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )


def _read_all(fh) -> str:
    fh.seek(0)
    return fh.read()


@pytest.fixture(scope="module")
def isolated_runs(fake_golden, tmp_path_factory) -> IsolatedRuns:
    return IsolatedRuns(fake_golden, tmp_path_factory.mktemp("isolated-runs"))


@pytest.fixture(scope="module")
def model_mock(fake_golden, tmp_path_factory) -> Iterator[MockServer]:
    """The model-API mock (simulator/mocks/model_api.py) on the host's address on the double's bridge."""
    host = subprocess.run(
        [sys.executable, str(DOUBLE_ADMIN), "host-ip"], env=fake_golden, capture_output=True, text=True, check=True
    ).stdout.strip()
    server = make_server(host, 0, tmp_path_factory.mktemp("model-mock"), {"text": "hello from the mock"})
    thread = threading.Thread(target=server.serve_forever, name="model-mock", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def nft_mentions(text: str) -> bool:
    """Whether the host's whole ruleset (every table, every family) mentions ``text`` anywhere."""
    return text in sh("nft", "list", "ruleset").stdout
