"""Operations against the double: the host-wide cap and queue, batch, retries, the reaper after kill -9,
alerts to a real HTTP server on loopback, and doctor. Trivial agents, no latency profile; no timing asserts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from agentvm.run.record import validate
from tests.conftest import DOUBLE_BIN, REPO

AGENTVM = [sys.executable, "-m", "agentvm"]


def make(*args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_instances(env) -> list[str]:
    proc = subprocess.run(
        [str(DOUBLE_BIN), "list", "--format", "json"], env=env, capture_output=True, text=True, check=True
    )
    prefix = env["AGENTVM_PREFIX"] + "-run-"
    return [i["name"] for i in json.loads(proc.stdout)["list"] if i["name"].startswith(prefix)]


def results(env) -> list[dict]:
    runs = Path(env["AGENTVM_RUNS_DIR"])
    records = [json.loads((d / "result.json").read_text()) for d in sorted(runs.iterdir()) if d.is_dir()]
    for record in records:
        validate(record)
    return records


def max_concurrent_run_instances(trace: Path, prefix: str) -> int:
    """From the double's trace: an instance exists from the start of its clone to the end of its purge."""
    events = []
    for line in trace.read_text().splitlines():
        entry = json.loads(line)
        argv = entry["argv"]
        name = next((a for a in argv if a.startswith(f"{prefix}-run-")), None)
        if name is None:
            continue
        if argv[1] == "clone":
            events.append((entry["start"], 1, name))
        elif argv[1] == "delete" and "--purge" in argv and entry["exit_code"] == 0:
            events.append((entry["end"], -1, name))
    live, peak = 0, 0
    for _t, delta, _name in sorted(events):
        live += delta
        peak = max(peak, live)
    return peak


@pytest.mark.double
def test_eight_concurrent_make_runs_share_two_slots(ops_env, tmp_path):
    trace = tmp_path / "trace.jsonl"
    env = {**ops_env, "MAX_VMS": "2", "MULTIPASS_DOUBLE_TRACE": str(trace), "AGENT_COMMAND": "echo done"}
    procs = [
        subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PROMPT=run {i}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outputs = [p.communicate(timeout=1200) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err[-2000:] for _out, err in outputs]
    assert sum("agentvm: queued: position" in err for _out, err in outputs) >= 1
    records = results(env)
    assert len(records) == 8 and {r["status"] for r in records} == {"succeeded"}
    assert max_concurrent_run_instances(trace, env["AGENTVM_PREFIX"]) <= 2
    assert run_instances(env) == []


@pytest.mark.double
def test_batch_with_one_failing_prompt(ops_env, tmp_path):
    prompts = tmp_path / "prompts.yaml"
    items = [{"prompt": f"p{i}", "agent_command": "cat"} for i in range(5)]
    items.insert(2, {"prompt": "fails", "agent_command": "sh -c 'echo boom >&2; exit 7'", "timeout": 120})
    prompts.write_text(json.dumps(items))  # JSON is YAML
    proc = make("batch", f"PROMPTS={prompts}", env={**ops_env, "MAX_VMS": "3"}, timeout=1200)
    assert proc.returncode != 0, proc.stderr[-3000:]
    [summary_file] = Path(ops_env["AGENTVM_RUNS_DIR"]).glob("batch-*.json")
    summary = json.loads(summary_file.read_text())
    assert [i["index"] for i in summary["items"]] == [1, 2, 3, 4, 5, 6]
    assert summary["counts"] == {"succeeded": 5, "agent_failed": 1} and summary["exit_code"] == 1
    assert summary["items"][2]["status"] == "agent_failed"
    statuses = sorted(r["status"] for r in results(ops_env))
    assert statuses == ["agent_failed"] + ["succeeded"] * 5
    assert all(Path(i["folder"], "result.json").exists() for i in summary["items"])
    assert run_instances(ops_env) == []


@pytest.mark.double
def test_clone_failure_once_is_retried_and_recorded(ops_env):
    env = {**ops_env, "MULTIPASS_DOUBLE_FAIL": "clone=error*1"}  # a counter of its own: see the double README
    proc = subprocess.run([*AGENTVM, "run", "--agent-command", "cat", "x"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [record] = results(env)
    assert record["status"] == "succeeded"
    [retry] = record["retries"]
    assert retry["phase"] == "clone" and retry["attempt"] == 1 and "is being prepared" in retry["error"]
    assert "clone attempt 1 of 2 failed" in proc.stderr


@pytest.mark.double
def test_clone_failure_twice_is_infra_failed_and_leaves_nothing(ops_env):
    env = {**ops_env, "MULTIPASS_DOUBLE_FAIL": "clone=error*2"}
    proc = subprocess.run([*AGENTVM, "run", "--agent-command", "cat", "x"], env=env, capture_output=True, text=True)
    [record] = results(env)
    assert (proc.returncode, record["status"], record["error"]["phase"]) == (3, "infra_failed", "clone")
    assert len(record["retries"]) == 1
    assert run_instances(env) == []


@pytest.mark.double
def test_usage_errors_are_not_retried(ops_env):
    env = {**ops_env, "AGENTVM_RETRIES": "3", "MULTIPASS_DOUBLE_FAIL": "clone=denied"}
    proc = subprocess.run([*AGENTVM, "run", "--agent-command", "cat", "x"], env=env, capture_output=True, text=True)
    [record] = results(env)
    assert (proc.returncode, record["status"], record["retries"]) == (3, "infra_failed", [])


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 300) -> str:
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert text in seen, seen
    return seen


@pytest.mark.double
def test_clean_after_kill_9_spares_a_live_run(ops_env):
    env = {**ops_env, "AGENTVM_REAP": "0"}
    victim = subprocess.Popen(
        ["make", "--no-print-directory", "run", "PROMPT=x", "AGENT_COMMAND=sleep 600"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for(victim, "agent ...")
    os.killpg(victim.pid, signal.SIGKILL)  # make, agentvm, ansible: nothing gets to clean up
    victim.wait()
    [orphan] = run_instances(env)
    survivor = subprocess.Popen(
        [*AGENTVM, "run", "--agent-command", "sh -c 'sleep 8; echo survived'", "y"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    _wait_for(survivor, "agent ...")
    clean = make("clean", env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"deleted: {orphan}" in clean.stdout and "1 live run(s) untouched" in clean.stdout
    _out, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err[-3000:]
    assert "survived" in err
    assert run_instances(env) == []
    assert list(Path(env["AGENTVM_STATE_DIR"], "alive").iterdir()) == []


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/alerts", received
    httpd.shutdown()


@pytest.mark.double
def test_alert_for_a_failed_run_only(ops_env, webhook):
    url, received = webhook
    env = {**ops_env, "ALERT_WEBHOOK_URL": url}
    ok = subprocess.run([*AGENTVM, "run", "--agent-command", "cat", "fine"], env=env, capture_output=True)
    assert ok.returncode == 0 and received == []
    bad = subprocess.run([*AGENTVM, "run", "--agent-command", "sh -c 'exit 7'", "bad"], env=env, capture_output=True)
    assert bad.returncode == 1
    [alert] = received
    failed = next(r for r in results(env) if r["status"] == "agent_failed")
    assert alert["run_id"] == failed["run_id"] and alert["status"] == "agent_failed"
    assert alert["agent"]["name"] == "custom" and alert["durations"]["total"] > 0
    assert alert["error"]["message"] and alert["folder"].endswith(failed["run_id"])


@pytest.mark.double
def test_runs_and_show(ops_env):
    proc = subprocess.run(
        [*AGENTVM, "run", "--agent-command", "cat", "hello history"], env=ops_env, capture_output=True
    )
    assert proc.returncode == 0
    [record] = results(ops_env)
    listing = make("runs", env=ops_env)
    assert record["run_id"] in listing.stdout and "succeeded" in listing.stdout and "hello history" in listing.stdout
    shown = make("show", f"RUN={record['run_id'][:12]}", env=ops_env)
    assert shown.returncode == 0 and f"run:      {record['run_id']}" in shown.stdout
    assert make("show", "RUN=19990101", env=ops_env).returncode != 0


def test_doctor_without_multipass(tmp_path):
    env = {**os.environ, "MULTIPASS_BIN": str(tmp_path / "no-multipass"), "AGENTVM_STATE_DIR": str(tmp_path / "s")}
    proc = make("doctor", env=env, timeout=120)
    assert proc.returncode != 0
    assert "not found" in proc.stdout and "install Multipass" in proc.stdout
