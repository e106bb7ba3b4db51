"""The AgentRun workflow's logic on a real Temporal dev server, with real workers whose run pipeline is a script
(fake_api_worker.py): retries and their classification, alerts sent once per workflow, worker shutdown, lost runs,
idempotency keys, cancel before a run starts. No VMs: these take seconds."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from svc_helpers import (
    FAKE_WORKER,
    Proc,
    agentvm,
    start_dev_server,
    status,
    submit,
    text,
    wait_for,
)

from agentvm.service import client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("temporal")
    procs: list[Proc] = []
    address = start_dev_server(tmp, procs)
    yield address
    for p in procs:
        p.stop()


class Webhook:
    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/alert"


@pytest.fixture
def hook():
    w = Webhook()
    yield w
    w.httpd.shutdown()
    w.httpd.server_close()


@pytest.fixture
def env(server, tmp_path, hook):
    fake_multipass = tmp_path / "multipass"
    fake_multipass.write_text("#!/bin/sh\necho '{\"list\": []}'\n")
    fake_multipass.chmod(0o755)
    e = {k: v for k, v in os.environ.items() if not k.startswith(("ALERT_", "TEMPORAL_", "AGENTVM_"))}
    e.update(
        TEMPORAL_ADDRESS=server,
        AGENTVM_STATE_DIR=str(tmp_path / "state"),
        AGENTVM_RUNS_DIR=str(tmp_path / "runs"),
        AGENTVM_HOST="fakehost",
        AGENTVM_HEARTBEAT_TIMEOUT="3",
        AGENTVM_TASK_QUEUE=f"q{tmp_path.name[-12:]}".replace("_", "-"),  # a queue of its own per test
        MULTIPASS_BIN=str(fake_multipass),
        FAKE_API_LOG=str(tmp_path / "calls.jsonl"),
        ALERT_WEBHOOK_URL=hook.url,
        ALERT_ATTEMPTS="1",
        MAX_VMS="2",
    )
    return e


def calls(env) -> list[dict]:
    path = Path(env["FAKE_API_LOG"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def worker(env, procs, tmp_path, name="worker") -> Proc:
    p = Proc([sys.executable, str(FAKE_WORKER)], env, tmp_path / f"{name}.log")
    procs.append(p)
    p.wait_output("polling", 60)
    return p


def script(*outcomes: str) -> str:
    return json.dumps({"outcomes": list(outcomes)})


def run_wait(env, prompt: str, *args: str):
    proc = agentvm("submit", "--wait", "--json", "--agent", "custom", "--agent-command", "fake", *args, prompt, env=env)
    record = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc, record


def test_infra_failures_are_retried_and_alert_once(env, procs, tmp_path, hook):
    worker(env, procs, tmp_path)
    proc, record = run_wait(env, script("infra_failed"), "--attempts", "3")
    assert proc.returncode == 3, text(proc)
    assert (record["status"], record["attempt"]) == ("infra_failed", 3)
    assert record["location"] == {"host": "fakehost", "folder": str(Path(env["AGENTVM_RUNS_DIR"], record["run_id"]))}
    wid = record["trigger"]["id"]
    assert [c["attempt"] for c in calls(env) if c["workflow_id"] == wid] == [1, 2, 3]
    wait_for(lambda: hook.received, 10, "the alert")
    assert [(a["run_id"], a["status"]) for a in hook.received] == [(record["run_id"], "infra_failed")]

    proc, record = run_wait(env, script("infra_failed", "succeeded"))
    assert proc.returncode == 0 and (record["status"], record["attempt"]) == ("succeeded", 2), text(proc)
    assert len(hook.received) == 1  # a success after a retried infra failure does not alert


@pytest.mark.parametrize(
    ("outcome", "code", "state", "alerts"),
    [("agent_failed", 1, "agent_failed", 1), ("timed_out", 4, "timed_out", 1), ("usage", 2, "rejected", 0)],
)
def test_agent_failures_timeouts_and_usage_errors_are_never_retried(
    env, procs, tmp_path, hook, outcome, code, state, alerts
):
    worker(env, procs, tmp_path)
    proc = agentvm("submit", "--wait", "--agent", "custom", "--agent-command", "f", script(outcome), env=env)
    assert proc.returncode == code, text(proc)
    wid = proc.stdout.decode().split()[0]
    assert [c["attempt"] for c in calls(env)] == [1]
    assert status(env, wid)["status"] == state
    if outcome == "usage":
        assert "the fake pipeline refuses this input" in text(proc)
    if alerts:
        wait_for(lambda: hook.received, 10, "the alert")
    assert len(hook.received) == alerts


def test_worker_shutdown_moves_the_run_and_a_lost_run_alerts_once(env, procs, tmp_path, hook):
    first = worker(env, procs, tmp_path, "first")
    wid = submit(
        env, "--agent", "custom", "--agent-command", "f", "--attempts", "2", script("succeeded:60", "succeeded")
    )
    wait_for(lambda: calls(env), 30, "the first attempt")
    assert first.stop(signal.SIGTERM, 60) == 0
    assert "the worker is shutting down: interrupting the run" in first.output()
    worker(env, procs, tmp_path, "second")
    proc = agentvm("status", wid, "--wait", "--json", env=env)
    record = json.loads(proc.stdout)
    assert proc.returncode == 0 and (record["status"], record["attempt"]) == ("succeeded", 2), text(proc)
    assert [c["outcome"] for c in calls(env)] == ["succeeded", "succeeded"] and calls(env)[0]["pid"] == first.pid
    assert hook.received == []  # the interrupted first attempt did not alert

    # Every attempt (here: the only one) lost under a stopping worker: no record; the workflow fails and alerts once.
    lost = submit(env, "--agent", "custom", "--agent-command", "f", "--attempts", "1", script("succeeded:60"))
    wait_for(lambda: any(c["workflow_id"] == lost for c in calls(env)), 30, "the lost run's attempt")
    procs[-1].stop(signal.SIGTERM, 60)
    worker(env, procs, tmp_path, "third")
    proc = agentvm("status", lost, "--wait", env=env)
    assert proc.returncode == 3 and "no attempt of the run finished" in text(proc), text(proc)
    assert status(env, lost)["status"] == "lost"
    wait_for(lambda: hook.received, 20, "the lost run's alert")
    [alert] = hook.received
    assert (alert["run_id"], alert["status"], alert["error"]["phase"]) == (lost, "infra_failed", "service")


def test_an_idempotency_key_starts_one_run(env, procs, tmp_path):
    worker(env, procs, tmp_path)
    key = f"ci-build-{tmp_path.name[-6:]}"
    first = agentvm("submit", "--key", key, "--agent", "custom", "--agent-command", "f", script("succeeded"), env=env)
    again = agentvm("submit", "--key", key, "--agent", "custom", "--agent-command", "f", script("succeeded"), env=env)
    assert first.returncode == again.returncode == 0, text(first) + text(again)
    assert first.stdout.decode().strip() == again.stdout.decode().strip() == key
    assert "exists already" in text(again)
    assert agentvm("status", key, "--wait", env=env).returncode == 0
    assert len(calls(env)) == 1
    # What `agentvm runs` will show: the service's recent runs with their status, host and folder.
    [run] = [r for r in client.recent_runs(env) if r.workflow_id == key]
    assert (run.status, run.temporal_status, run.host) == ("succeeded", "COMPLETED", "fakehost")
    assert run.folder == str(Path(env["AGENTVM_RUNS_DIR"], f"fake-{key}-1"))


def test_cancel_before_the_run_starts_runs_nothing(env, procs, tmp_path):
    worker(env, procs, tmp_path)
    # Pinned to a host without a worker: the workflow runs, its run waits in that host's queue.
    wid = submit(env, "--host", "nowhere", "--agent", "custom", "--agent-command", "f", script("succeeded"))
    wait_for(lambda: status(env, wid)["status"] == "queued" and status(env, wid)["attempt"] == 1, 30, "the queued run")
    proc = agentvm("cancel", wid, env=env)
    assert proc.returncode == 0 and "canceled" in text(proc), text(proc)
    info = status(env, wid)
    assert (info["temporal_status"], info["status"]) == ("CANCELED", "interrupted")
    assert calls(env) == []
    assert agentvm("status", wid, "--wait", env=env).returncode == 130


def test_bad_input_and_no_service(env, tmp_path):
    proc = agentvm("submit", "--workspace", "git://example.org/r.git", "x", env=env)
    assert proc.returncode == 2 and "must start with https://" in text(proc)
    proc = agentvm("submit", "x", env={**env, "TEMPORAL_ADDRESS": "127.0.0.1:9"})
    assert proc.returncode == 3 and "cannot reach the Temporal cluster at 127.0.0.1:9" in text(proc), text(proc)
    proc = agentvm("status", "no-such-run", env=env)
    assert proc.returncode == 1 and "no run with the id no-such-run" in text(proc)
