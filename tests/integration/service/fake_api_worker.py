"""``agentvm worker`` with the run pipeline replaced by a script, for tests of the workflow's logic without VMs.

The prompt is JSON: ``{"outcomes": ["infra_failed:30", "succeeded"]}``; attempt n gets the n-th outcome (the last
one repeats). ``usage`` raises a UsageError; any other value is a record status, optionally after ``:seconds`` (the
fake run ends early, ``interrupted``, when cancelled). Each call is logged to ``$FAKE_API_LOG``.
Everything else is the real worker: queues, the gate, retries, heartbeats, cancellation and alerts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from agentvm import api
from agentvm.errors import EXIT_CODES, Status, UsageError


def fake_run(options, env=None, *, cancel=None, on_phase=None, out=None):
    script = json.loads(options.prompt)
    attempt = options.attempt or 1
    outcomes = script["outcomes"]
    outcome, _, seconds = outcomes[min(attempt, len(outcomes)) - 1].partition(":")
    workflow_id = (options.trigger or {}).get("id")
    with open(os.environ["FAKE_API_LOG"], "a") as log:
        log.write(json.dumps({"workflow_id": workflow_id, "attempt": attempt, "outcome": outcome, "pid": os.getpid()}))
        log.write("\n")
    if outcome == "usage":
        raise UsageError("the fake pipeline refuses this input")
    for phase in ("clone", "agent"):
        if on_phase:
            on_phase(phase)
    deadline = time.monotonic() + float(seconds or 0)
    while time.monotonic() < deadline:
        if cancel is not None and cancel.wait(0.1):
            outcome = "interrupted"
            break
    run_id = f"fake-{workflow_id}-{attempt}"
    run_dir = Path(os.environ["AGENTVM_RUNS_DIR"]) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    status = Status(outcome)
    record = {
        "schema_version": 1,
        "run_id": run_id,
        "status": str(status),
        "exit_code": EXIT_CODES[status],
        "agent": {"name": "fake", "version": None, "model": None, "exit_code": None},
        "result_text": f"{outcome} on attempt {attempt}",
        "timings": {"total": 0.1},
        "instance": {"name": f"fake-run-{run_id}", "kept": False},
        "error": None if status == Status.SUCCEEDED else {"phase": "agent", "message": outcome, "hint": "none"},
        "retries": [],
    }
    return api.RunResult(record=record, exit_code=EXIT_CODES[status], run_dir=run_dir)


if __name__ == "__main__":
    api.run = fake_run
    from agentvm.service.cli import exit_with

    exit_with(["worker", *sys.argv[1:]])
