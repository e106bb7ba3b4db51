"""The service end to end on the Multipass double: ``agentvm service`` (embedded dev server + this host's worker)
on free loopback ports, a second simulated host (its own double data folder, state and runs folders, worker),
and runs of the ``custom`` agent on a fake golden. Checks the VM cap through the double's trace, visibility in
``temporal workflow list`` and the UI's HTTP API, exit codes, cancel, kill -9 of a worker, a restart of the
service, two hosts, and that ``make run`` without the service is unchanged."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from svc_helpers import (
    AGENTVM,
    Proc,
    agentvm,
    free_port,
    gone,
    launch_golden,
    peak_run_vms,
    record_of,
    run_vms,
    status,
    submit,
    temporal_list,
    text,
    ui_workflows,
    wait_closed,
    wait_for,
)

from agentvm.run.record import validate
from tests.conftest import DOUBLE_ADMIN, REPO

pytestmark = [pytest.mark.double, pytest.mark.slow]

SLEEPY = "sh -c 'sleep 5; cat'"


def host_env(base: dict, root: Path, host: str) -> dict:
    env = {k: v for k, v in base.items() if not k.startswith(("ALERT_", "TEMPORAL_", "MAX_VMS", "PROMPT", "KEEP"))}
    env.update(
        AGENTVM_HOST=host,
        AGENTVM_STATE_DIR=str(root / "state"),
        AGENTVM_RUNS_DIR=str(root / "runs"),
        AGENTVM_RETRY_DELAY="1",
        AGENTVM_HEARTBEAT_TIMEOUT="5",
        AGENT="custom",
        MAX_VMS="2",
        MULTIPASS_DOUBLE_TRACE=str(root / "trace.jsonl"),
    )
    for key in ("AGENTVM_TEMPORAL_PORT", "AGENTVM_TEMPORAL_UI_PORT", "AGENTVM_TASK_QUEUE", "AGENTVM_WORKER_DRAIN"):
        env.pop(key, None)
    return env


class Service:
    def __init__(self, env: dict, root: Path) -> None:
        self.port, self.ui_port = free_port(), free_port()
        self.env = {**env, "AGENTVM_TEMPORAL_PORT": str(self.port), "AGENTVM_TEMPORAL_UI_PORT": str(self.ui_port)}
        self.address = f"127.0.0.1:{self.port}"
        self.root = root
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = Proc([*AGENTVM, "service"], self.env, self.root / "service.log")
        self.proc.wait_output("polling", 120)

    def lock(self) -> dict:
        return json.loads((self.root / "state" / "service" / "service.lock").read_text() or "{}")

    def client_env(self) -> dict:
        """Where the CLI (submit, status, cancel) finds this service: the same settings, any folder."""
        return self.env


@pytest.fixture(scope="module")
def host_a(fake_golden, tmp_path_factory) -> dict:
    return host_env(fake_golden, tmp_path_factory.mktemp("hosta"), "hosta")


@pytest.fixture(scope="module")
def service(host_a) -> Service:
    svc = Service(host_a, Path(host_a["AGENTVM_STATE_DIR"]).parent)
    svc.start()
    server_pid = svc.lock()["server_pid"]
    yield svc
    assert svc.proc.stop(signal.SIGTERM) == 0, svc.proc.output()[-3000:]
    assert gone(server_pid), "the dev server outlived the service"
    assert run_vms(host_a) == []


@pytest.fixture(scope="module")
def host_b(service, double_env, host_a, tmp_path_factory):
    """A second simulated host: its own double data folder, golden, state and runs folders; it reaches host A's
    dev server through TEMPORAL_ADDRESS, like a worker on another machine."""
    root = tmp_path_factory.mktemp("hostb")
    data = REPO / ".cache" / f"test-svc-hostb-{uuid.uuid4().hex[:8]}"
    env = host_env({**double_env, "AGENTVM_PREFIX": host_a["AGENTVM_PREFIX"]}, root, "hostb")
    env.update(MULTIPASS_DOUBLE_DATA=str(data), TEMPORAL_ADDRESS=service.address)
    launch_golden(env, env["AGENTVM_PREFIX"])
    yield env
    subprocess.run(
        [sys.executable, str(DOUBLE_ADMIN), "down", "--data", str(data), "--purge", "--quiet"], check=False, timeout=300
    )


def worker(env: dict, procs: list, name: str) -> Proc:
    p = Proc([*AGENTVM, "worker"], env, Path(env["AGENTVM_STATE_DIR"]).parent / f"{name}.log")
    procs.append(p)
    p.wait_output("polling", 120)
    return p


def decoded(payload: dict) -> object:
    return json.loads(base64.b64decode(payload["data"]))


def test_make_run_without_the_service_is_unchanged(fake_golden, tmp_path):
    """Before any service exists in this module: `make run` neither needs nor starts one."""
    env = host_env(fake_golden, tmp_path, "hosta")
    env.pop("MULTIPASS_DOUBLE_TRACE")
    proc = subprocess.run(
        ["make", "--no-print-directory", "run", "PROMPT=plain $(run) 'as before'", "AGENT_COMMAND=cat"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [folder] = Path(env["AGENTVM_RUNS_DIR"]).iterdir()
    record = json.loads((folder / "result.json").read_text())
    assert record["status"] == "succeeded" and record["result_text"].strip() == "plain $(run) 'as before'"
    assert "attempt" not in record  # the service's own field is not added here
    assert record["location"] == {"host": "hosta", "folder": str(folder)}  # AGENTVM_HOST names this host
    assert not (tmp_path / "state" / "service").exists()


def test_six_submits_share_two_vm_slots_and_show_in_temporal_and_the_ui(service, host_a):
    env = service.client_env()
    ids = [submit(env, "--agent-command", SLEEPY, "--label", f"n={i}", f"run {i}") for i in range(6)]
    closed = [wait_closed(env, wid, 900) for wid in ids]
    assert {c["temporal_status"] for c in closed} == {"COMPLETED"}
    records = [record_of(env, wid) for wid in ids]
    for i, record in enumerate(records):
        validate(record)
        assert (record["status"], record["result_text"].strip(), record["labels"]) == (
            "succeeded",
            f"run {i}",
            {"n": str(i)},
        )
        assert record["location"]["host"] == "hosta" and Path(record["location"]["folder"], "result.json").exists()
    assert peak_run_vms(Path(host_a["MULTIPASS_DOUBLE_TRACE"]), host_a["AGENTVM_PREFIX"]) == 2
    assert run_vms(host_a) == []

    listed = {w["execution"]["workflowId"]: w for w in temporal_list(service.address)}
    for wid in ids:
        assert listed[wid]["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"
        fields = listed[wid]["searchAttributes"]["indexedFields"]
        assert decoded(fields["AgentvmStatus"]) == "succeeded" and decoded(fields["AgentvmHost"]) == "hosta"
    ui = {w["execution"]["workflowId"]: w for w in ui_workflows(service.ui_port)}
    for wid in ids:
        assert ui[wid]["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"
        assert decoded(ui[wid]["searchAttributes"]["indexedFields"]["AgentvmStatus"]) == "succeeded"
    table = agentvm("status", env=env)
    assert table.returncode == 0 and all(wid in table.stdout.decode() for wid in ids)


def test_submit_wait_exits_with_the_runs_code(service):
    env = service.client_env()
    runs = {
        0: subprocess.Popen(
            [*AGENTVM, "submit", "--wait", "--agent-command", "cat", "fine"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ),
        1: subprocess.Popen(
            [*AGENTVM, "submit", "--follow", "--agent-command", "sh -c 'echo boom >&2; exit 7'", "fails"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ),
    }
    for expected, proc in runs.items():
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == expected, err.decode()[-3000:]
        assert len(out.decode().split()) == 1  # stdout: the workflow id only
        assert "folder:       hosta:" in err.decode()
    # --follow printed the phases it saw (it polls each second: a short phase such as clone may pass unseen)
    phases = re.findall(r"running on hosta \(attempt 1\): (\w+)", err.decode())
    assert {"start", "agent", "fetch", "teardown"} & set(phases), err.decode()
    assert "status:       agent_failed (exit 1)" in err.decode()


def test_cancel_deletes_the_vm_and_records_interrupted(service, host_a):
    env = service.client_env()
    wid = submit(env, "--agent-command", "sh -c 'sleep 300; cat'", "long")
    wait_for(lambda: status(env, wid)["phase"] == "agent", 300, "the agent phase", 1)
    assert len(run_vms(host_a)) == 1
    proc = agentvm("cancel", wid, env=env)
    assert proc.returncode == 0 and "canceled" in text(proc), text(proc)
    assert run_vms(host_a) == []
    info = status(env, wid)
    assert (info["temporal_status"], info["status"]) == ("CANCELED", "interrupted")
    record = json.loads(Path(info["run"]["folder"], "result.json").read_text())
    assert record["status"] == "interrupted" and record["instance"]["name"] not in run_vms(host_a)
    assert agentvm("status", wid, "--wait", env=env).returncode == 130


def test_a_git_workspace_is_fetched_by_the_worker(service, tmp_path):
    env = service.client_env()
    repo = tmp_path / "repo"
    repo.mkdir()
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for argv in (["init", "-q", "-b", "main"], ["add", "."], [*ident, "commit", "-qm", "one"], ["tag", "v1"]):
        if argv == ["add", "."]:
            (repo / "notes.txt").write_text("from the repository\n")
        subprocess.run(["git", *argv], cwd=repo, check=True, capture_output=True)
    (repo / "notes.txt").write_text("a later commit\n")
    subprocess.run(["git", *ident, "commit", "-qam", "two"], cwd=repo, check=True, capture_output=True)
    url = f"file://{repo}"
    proc = agentvm(
        "submit",
        "--wait",
        "--json",
        "--workspace",
        url,
        "--ref",
        "v1",
        "--agent-command",
        "cat notes.txt",
        "x",
        env=env,
    )
    assert proc.returncode == 0, text(proc)
    record = json.loads(proc.stdout)
    assert record["result_text"].strip() == "from the repository"
    assert record["workspace"]["source"] == f"{url}#v1" and record["workspace"]["files"] >= 1
    scratch = Path(env["AGENTVM_STATE_DIR"], "service", "workspaces")
    assert not scratch.exists() or list(scratch.iterdir()) == []  # the worker removed its scratch folder


def test_kill_9_of_a_worker_mid_run_is_retried_by_a_new_worker(service, host_b, procs):
    env = service.client_env()
    first = worker(host_b, procs, "worker-b1")
    wid = submit(env, "--host", "hostb", "--agent-command", "sh -c 'sleep 20; cat'", "survives")
    wait_for(lambda: status(env, wid)["phase"] == "agent", 300, "the agent phase", 1)
    first.stop(signal.SIGKILL)
    [orphan] = run_vms(host_b)  # the dead worker's VM is still there
    second = worker(host_b, procs, "worker-b2")
    assert f"reaped 1 leftover run VM(s): {orphan}" in second.output()
    closed = wait_closed(env, wid, 900)
    record = record_of(env, wid)
    assert (closed["temporal_status"], record["status"], record["attempt"]) == ("COMPLETED", "succeeded", 2)
    assert record["location"]["host"] == "hostb" and record["instance"]["name"] != orphan
    assert run_vms(host_b) == []


def test_two_hosts_spread_pin_and_take_over(service, host_a, host_b, procs):
    env = service.client_env()
    b = worker(host_b, procs, "worker-b")
    shared = [submit(env, "--agent-command", SLEEPY, f"shared {i}") for i in range(4)]
    pinned = {h: submit(env, "--host", h, "--agent-command", "cat", f"pinned to {h}") for h in ("hosta", "hostb")}
    for wid in [*shared, *pinned.values()]:
        wait_closed(env, wid, 900)
    hosts = [record_of(env, wid)["location"]["host"] for wid in shared]
    assert set(hosts) == {"hosta", "hostb"}, hosts  # 4 runs, 2 slots per host: both hosts took some
    for h, wid in pinned.items():
        assert record_of(env, wid)["location"]["host"] == h
    assert peak_run_vms(Path(host_b["MULTIPASS_DOUBLE_TRACE"]), host_b["AGENTVM_PREFIX"]) <= 2

    # Host B stops while it runs one of these: its VM is deleted and host A finishes the run. Three runs on the
    # shared queue: a host takes at most two (MAX_VMS) from it, so host B gets at least one.
    moving = [submit(env, "--agent-command", "sh -c 'sleep 30; cat'", f"moving {i}") for i in range(3)]
    started = ("start", "ready", "upload", "agent")

    def on_b() -> bool:
        return any((s := status(env, w))["host"] == "hostb" and s["phase"] in started for w in moving)

    wait_for(on_b, 300, "a run on host B", 1)
    assert b.stop(signal.SIGTERM) == 0
    assert "interrupting the run (its VM is deleted)" in b.output()
    assert run_vms(host_b) == []
    records = [wait_closed(env, w, 900) and record_of(env, w) for w in moving]
    assert [r["status"] for r in records] == ["succeeded"] * 3
    assert [r["location"]["host"] for r in records] == ["hosta"] * 3
    assert 2 in [r["attempt"] for r in records]
    assert run_vms(host_a) == []


def test_a_service_restart_loses_no_queued_run(fake_golden, tmp_path):
    """`make service DETACH=1`, two runs on one VM slot, `make service-stop` while one waits, start again."""
    prefix = "r" + uuid.uuid4().hex[:6]  # a golden of its own: this service's reaper must not see other runs
    env = {**host_env(fake_golden, tmp_path, "hosta"), "AGENTVM_PREFIX": prefix, "MAX_VMS": "1"}
    env.update(AGENTVM_TEMPORAL_PORT=str(free_port()), AGENTVM_TEMPORAL_UI_PORT=str(free_port()))
    launch_golden(env, prefix)

    def make(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "--no-print-directory", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    try:
        started = make("service", "DETACH=1")
        assert started.returncode == 0 and "service running in the background" in started.stderr, started.stderr
        lock = json.loads((tmp_path / "state" / "service" / "service.lock").read_text())
        ids = [
            make("submit", f"PROMPT=queued {i}", "AGENT_COMMAND=sh -c 'sleep 3; cat'").stdout.strip() for i in range(2)
        ]
        assert all(ids), ids
        wait_for(lambda: status(env, ids[0])["phase"] in ("ready", "upload", "agent"), 300, "the first run", 1)
        assert status(env, ids[1])["status"] == "queued"
        stopped = make("service-stop")
        assert stopped.returncode == 0 and "service stopped" in stopped.stderr, stopped.stderr
        assert gone(lock["pid"]) and gone(lock["server_pid"])
        assert run_vms(env) == []
        assert make("service", "DETACH=1").returncode == 0
        records = [wait_closed(env, w, 900) and record_of(env, w) for w in ids]
        assert [r["status"] for r in records] == ["succeeded"] * 2
        assert [r["result_text"].strip() for r in records] == ["queued 0", "queued 1"]
        assert records[0]["attempt"] == 2  # interrupted by the stop, run again after the restart
        assert peak_run_vms(Path(env["MULTIPASS_DOUBLE_TRACE"]), prefix) == 1
    finally:
        lock = json.loads((tmp_path / "state" / "service" / "service.lock").read_text() or "{}")
        assert make("service-stop").returncode == 0
        assert all(gone(p) for p in (lock.get("pid"), lock.get("server_pid")) if p)
        subprocess.run(
            [sys.executable, "-m", "agentvm.cli", "clean", "--all"], env=env, capture_output=True, check=False
        )
    assert run_vms(env) == []
