"""Helpers of the service tests: Temporal dev servers on free loopback ports with a temporary database, agentvm
services and workers as processes, the CLI as a subprocess, the Temporal CLI and the UI's HTTP API.

Everything Temporal runs in child processes, never in pytest's own: the SDK's native threads may crash an
interpreter's finalisation (see ``agentvm.service.cli.exit_with``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from simulator import DOUBLE_BIN
from tests.conftest import REPO
from tests.integration.conftest import make_fake_golden

AGENTVM = [sys.executable, "-m", "agentvm.cli"]
TEMPORAL = str(Path(sys.executable).parent / "temporal")
FAKE_WORKER = Path(__file__).with_name("fake_api_worker.py")
DEV_SERVER = [TEMPORAL, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--log-level", "error"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone too (its parent has not reaped it yet)
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    return True


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def agentvm(*args: str, env: dict, timeout: float = 600, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*AGENTVM, *args], env=env, capture_output=True, timeout=timeout, input=input, check=False, cwd=REPO
    )


def text(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def submit(env: dict, *args: str) -> str:
    proc = agentvm("submit", *args, env=env, timeout=120)
    assert proc.returncode == 0, text(proc)
    return proc.stdout.decode().strip()


def status(env: dict, workflow_id: str) -> dict:
    proc = agentvm("status", workflow_id, "--json", env=env, timeout=60)
    assert proc.returncode == 0, text(proc)
    return json.loads(proc.stdout)


def wait_closed(env: dict, workflow_id: str, timeout: float = 600) -> dict:
    return wait_for(
        lambda: (s := status(env, workflow_id))["temporal_status"] != "RUNNING" and s,
        timeout,
        f"{workflow_id} to end",
        1,
    )


def temporal_list(address: str, query: str = "WorkflowType='AgentRun'") -> list[dict]:
    proc = subprocess.run(
        [TEMPORAL, "workflow", "list", "--address", address, "--query", query, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout or "[]")


def ui_workflows(ui_port: int) -> list[dict]:
    """The workflows as the UI's HTTP API serves them (the UI's own port)."""
    url = f"http://127.0.0.1:{ui_port}/api/v1/namespaces/default/workflows?query=WorkflowType%3D%27AgentRun%27"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    with opener.open(url, timeout=30) as response:
        return json.loads(response.read()).get("executions") or []


class Proc:
    """A long-running child (dev server, service, worker) with its log; stopped on exit of the fixture."""

    def __init__(self, argv: list[str], env: dict, log: Path) -> None:
        self.log = log
        self.fh = open(log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=self.fh, stderr=subprocess.STDOUT, cwd=REPO
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_output(self, needle: str, timeout: float = 60) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode} before {needle!r}:\n{self.output()[-3000:]}")
            return needle in self.output()

        wait_for(seen, timeout, f"{needle!r} in {self.log.name}", 0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 180) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.fh.close()
        return self.proc.returncode


def start_dev_server(tmp: Path, procs: list[Proc]) -> str:
    port = free_port()
    server = Proc(
        [*DEV_SERVER, "--port", str(port), "--db-filename", str(tmp / "temporal.db")],
        dict(os.environ),
        tmp / "temporal.log",
    )
    procs.append(server)
    address = f"127.0.0.1:{port}"

    def answers() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(server.output())
        probe = subprocess.run(
            [TEMPORAL, "operator", "cluster", "health", "--address", address], capture_output=True, timeout=30
        )
        return probe.returncode == 0

    wait_for(answers, 60, "the dev server")
    return address


# --- the Multipass double --------------------------------------------------------------------------------------


def double(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DOUBLE_BIN), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def launch_golden(env: dict, prefix: str) -> None:
    """A stand-in for ``<prefix>-golden`` on another simulated host (like the fake_golden fixture)."""
    make_fake_golden(env, prefix, f"fake-{prefix}-hostb")


def run_vms(env: dict) -> list[str]:
    proc = double(env, "list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    prefix = env["AGENTVM_PREFIX"] + "-run-"
    return [i["name"] for i in json.loads(proc.stdout)["list"] if i["name"].startswith(prefix)]


def peak_run_vms(trace: Path, prefix: str) -> int:
    """From the double's trace: a run VM exists from the start of its clone to the end of its purge."""
    events = []
    for line in trace.read_text().splitlines():
        entry = json.loads(line)
        argv = entry["argv"]
        name = next((a for a in argv if a.startswith(f"{prefix}-run-")), None)
        if name is None:
            continue
        if argv[1] == "clone":
            events.append((entry["start"], 1))
        elif argv[1] == "delete" and "--purge" in argv and entry["exit_code"] == 0:
            events.append((entry["end"], -1))
    live = peak = 0
    for _t, delta in sorted(events):
        live += delta
        peak = max(peak, live)
    return peak


def record_of(env: dict, workflow_id: str) -> dict:
    info = status(env, workflow_id)
    assert info["record"] is not None, info
    return info["record"]
