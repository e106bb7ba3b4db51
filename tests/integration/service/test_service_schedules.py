"""`agentvm schedule` end to end on the Multipass double: a real `agentvm service` (dev server + worker) and runs of
the `custom` agent on a fake golden. A schedule every few seconds starts runs whose records name it, `pause` stops
it, `trigger` starts one at once while paused, `delete` removes it; with overlap skip a slow agent's runs never
overlap; bad input creates nothing; no service exits 3.

To keep the module near two minutes, the slow schedule runs while the first test does, and the refusals are
checked while the paused schedule is watched for runs it must not start."""

from __future__ import annotations

import itertools
import json
import time
from datetime import datetime

import pytest
from svc_helpers import agentvm, free_port, record_of, status, temporal_list, text, wait_closed, wait_for
from test_service_double import host_a, service  # noqa: F401 (the module's fixtures: one service for these tests)

pytestmark = [pytest.mark.double, pytest.mark.slow]


def schedule(env: dict, *args: str, code: int = 0) -> str:
    proc = agentvm("schedule", *args, env=env, timeout=120)
    assert proc.returncode == code, text(proc)
    return proc.stdout.decode() + proc.stderr.decode()


def runs_of(address: str, name: str) -> list[str]:
    """The workflows the schedule started (Temporal names them agentvm-NAME-<time>), oldest first."""
    query = f"WorkflowType='AgentRun' AND WorkflowId STARTS_WITH 'agentvm-{name}-'"
    return sorted(w["execution"]["workflowId"] for w in temporal_list(address, query))


def listed(env: dict) -> dict[str, dict]:
    proc = agentvm("schedule", "list", "--json", env=env, timeout=60)
    assert proc.returncode == 0, text(proc)
    return {row["name"]: row for row in json.loads(proc.stdout)}


def shown(env: dict, name: str) -> dict:
    proc = agentvm("schedule", "show", name, "--json", env=env, timeout=60)
    assert proc.returncode == 0, text(proc)
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def slow(service):  # noqa: F811
    """A slow agent every 2 s under overlap skip (the default); it runs in the background of the first test."""
    env = service.client_env()
    schedule(env, "add", "slow", "--every", "2", "--agent-command", "sh -c 'sleep 8; cat'", "--prompt", "slow one")
    yield "slow"
    agentvm("schedule", "delete", "slow", env=env, timeout=60)


def refusals(env: dict, existing: str) -> None:
    """Bad input exits 2 and creates nothing; a taken name or an unknown one exits 1 with a hint."""
    env = {**env, "AGENT_COMMAND": "cat"}  # the environment's defaults apply, as for submit
    for argv, message in [
        (["add", "cron", "--cron", "0 6 * *", "--prompt", "x"], "has 4 field"),
        (["add", "cron", "--cron", "0 6 * * 1#2", "--prompt", "x"], "not a valid day of week"),
        (["add", "cron", "--every", "60", "--prompt", "x", "--workspace", "https://u:p@h.invalid/r"], "credentials"),
    ]:
        assert message in schedule(env, *argv, code=2)
    assert "exists already" in schedule(env, "add", existing, "--every", "60", "--prompt", "other", code=1)
    schedule(env, "add", "weekdays", "--cron", "0 6 * * 1-5", "--timezone", "Europe/Paris", "--prompt", "x")
    d = shown(env, "weekdays")
    assert (d["when"], d["cron"], d["timezone"], d["paused"], d["actions"]) == (
        "cron 0 6 * * 1-5 (Europe/Paris)",
        "0 6 * * 1-5",
        "Europe/Paris",
        False,
        0,
    )
    assert d["next_action_times"] and d["run"]["summary"] == "custom: x"
    schedule(env, "delete", "weekdays")
    for action in ("show", "pause", "trigger"):
        assert "no schedule named 'nope' (see `agentvm schedule list`)" in schedule(env, action, "nope", code=1)


@pytest.mark.usefixtures("slow")
def test_a_schedule_runs_pauses_triggers_and_is_deleted(service, tmp_path):  # noqa: F811
    env = service.client_env()
    canary = tmp_path / "canary"
    prompt = f"tick {{{{ 7*7 }}}} $(touch {canary}) `touch {canary}` '\"; touch {canary}"
    out = schedule(
        env, "add", "tick", "--every", "3", "--agent-command", "cat", "--prompt", prompt, "--label", "via=sched"
    )
    assert out.startswith("tick\n") and "every 3s, overlap skip" in out
    wait_for(lambda: "tick" in listed(env), 30, "the schedule in `schedule list`")

    first = wait_for(lambda: len(ids := runs_of(service.address, "tick")) >= 2 and ids, 120, "two scheduled runs")
    schedule(env, "pause", "tick", "--note", "enough for now")
    view = schedule(env, "show", "tick")
    assert "when:         every 3s" in view and "overlap:      skip" in view and "state:        paused" in view
    assert "note:         enough for now" in view and "prompt:       custom: tick {{ 7*7 }}" in view
    assert "labels via=sched" in view

    before = runs_of(service.address, "tick")
    for wid in before:
        assert wait_closed(env, wid, 300)["temporal_status"] == "COMPLETED"
    watched = time.monotonic()
    refusals(env, "tick")
    time.sleep(max(0.0, 7 - (time.monotonic() - watched)))  # more than two intervals: paused, nothing starts
    assert runs_of(service.address, "tick") == before
    assert runs_of(service.address, "cron") == [] and runs_of(service.address, "weekdays") == []
    wait_for(lambda: set(listed(env)) == {"tick", "slow"}, 30, "only the two schedules listed")
    row = listed(env)["tick"]
    assert (row["paused"], row["next"], row["when"]) == (True, None, "every 3s")
    assert "paused" in schedule(env, "list")

    for wid in first:
        record = record_of(env, wid)
        assert record["trigger"] == {"kind": "schedule", "name": "tick", "id": wid}
        assert (record["status"], record["result_text"], record["labels"]) == ("succeeded", prompt, {"via": "sched"})

    started = time.monotonic()
    triggered = schedule(env, "trigger", "tick").splitlines()[0]
    assert triggered.startswith("agentvm-tick-") and triggered not in before
    assert time.monotonic() - started < 15
    assert wait_closed(env, triggered, 300)["temporal_status"] == "COMPLETED"
    assert record_of(env, triggered)["trigger"] == {"kind": "schedule", "name": "tick", "id": triggered}
    assert runs_of(service.address, "tick") == sorted([*before, triggered])
    d = shown(env, "tick")
    assert d["paused"] and d["actions"] == len(before) + 1
    assert triggered in [a["workflow_id"] for a in d["recent"]]
    assert not canary.exists()

    assert "deleted" in schedule(env, "delete", "tick")
    assert "no schedule named 'tick'" in schedule(env, "show", "tick", code=1)
    schedule(env, "delete", "tick", code=1)
    wait_for(lambda: "tick" not in listed(env), 30, "the schedule gone from `schedule list`")
    assert status(env, triggered)["temporal_status"] == "COMPLETED"  # deleting a schedule keeps its runs


def test_overlap_skip_never_runs_two_at_once(service, slow):  # noqa: F811
    env = service.client_env()
    wait_for(lambda: len(runs_of(service.address, slow)) >= 2, 150, "two runs of the slow schedule")
    d = shown(env, slow)
    schedule(env, "delete", slow)
    assert d["overlap"] == "skip" and d["skipped_overlap"] >= 2 and len(d["running"]) <= 1
    spans = sorted(
        (datetime.fromisoformat(s["started_at"]), datetime.fromisoformat(s["closed_at"]))
        for s in (wait_closed(env, wid, 300) for wid in runs_of(service.address, slow))
    )
    assert len(spans) >= 2
    for (_, closed), (started, _) in itertools.pairwise(spans):
        assert started >= closed, spans  # each run started after the previous one ended


def test_no_service_exits_3(host_a):  # noqa: F811
    env = {**host_a, "AGENTVM_TEMPORAL_PORT": str(free_port())}
    for argv in (["list"], ["add", "x", "--every", "60", "--prompt", "p", "--agent-command", "cat"]):
        assert "cannot reach the agentvm service" in schedule(env, *argv, code=3)
