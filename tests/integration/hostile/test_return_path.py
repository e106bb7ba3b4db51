"""Hostile agents against the return path, on the double: what comes back from the VM is made by the agent
(links, escape chains, compression bombs, floods, forged records, processes left behind to rewrite them).

The seven runs start together (one fake golden, MAX_VMS high enough for all) and each test checks one of them.
Every run must leave the host as it found it outside its run folder (a sandbox holding a canary and the runs
folder is compared entry by entry), keep the agentvm process tree under MAX_RSS_MB, write a valid
result.json, exit with the code docs/run.md gives for its status, print no traceback, leave no instance
and no trace of its credential.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.hostile import agents
from tests.integration.hostile.harness import (
    SHARED_PLACES,
    Finished,
    Launched,
    Sandbox,
    base_env,
    check_contained,
    folder_bytes,
    host_places,
    launch,
    marker_hits,
    run_folder,
    warning_codes,
)

pytestmark = pytest.mark.double
MIB = 1024 * 1024
BOMB_MIB = 512


@dataclass
class Scenario:
    name: str
    program: bytes
    env: dict[str, str]
    sandbox: Sandbox
    logs: Path
    key: str
    started: float = 0.0
    launched: Launched | None = None
    done: Finished | None = None


def _scenarios(session_env: dict[str, str], tmp: Path, hook_url: str) -> list[Scenario]:
    plans: list[tuple[str, object, dict[str, str]]] = [
        ("links", None, {}),
        ("flood", agents.flood(50), {"AGENTVM_MAX_RESULT_MB": "5"}),
        ("bomb-by-background", agents.bomb_by_background(BOMB_MIB), {"AGENTVM_MAX_RESULT_MB": "64"}),
        ("forged-exit-code", agents.forged_exit_code_and_bomb(BOMB_MIB), {"AGENTVM_MAX_RESULT_MB": "64"}),
        ("summary-list", agents.summary_rewritten_by_background("[1]"), {}),
        ("timeout-forged", agents.timeout_forged_as_success(), {"TIMEOUT": "5", "ALERT_WEBHOOK_URL": hook_url}),
        ("garbage", agents.garbage_results(50), {"AGENTVM_MAX_RESULT_MB": "5"}),
    ]
    out = []
    for name, program, extra in plans:
        sandbox = Sandbox.create(tmp / name / "sandbox")
        key = f"sk-hostile-{uuid.uuid4().hex}"
        if program is None:  # the escape chain aims at this run's own sandbox
            program = agents.links_and_escapes(str(sandbox.root), "HOSTILE_KEY")
        env = base_env(
            session_env,
            sandbox.runs,
            AGENT_COMMAND="python3 -",
            AGENT_CREDENTIALS="HOSTILE_KEY",
            HOSTILE_KEY=key,
            MAX_VMS="8",
            **extra,
        )
        out.append(Scenario(name, program, env, sandbox, tmp / name / "logs", key))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def runs(fake_golden, tmp_path_factory, hook) -> dict[str, Scenario]:
    scenarios = _scenarios(fake_golden, tmp_path_factory.mktemp("hostile-return"), hook.url)
    for s in scenarios:
        s.started = time.time()
        s.launched = launch(["run", "-"], s.env, s.logs, stdin=s.program)
    for s in scenarios:
        assert s.launched is not None
        s.done = s.launched.finish(timeout=800)
    return {s.name: s for s in scenarios}


def _key_hits(s: Scenario) -> list[str]:
    places = [*host_places(s.env, s.sandbox), s.logs]
    return marker_hits(s.key, places) + marker_hits(s.key, SHARED_PLACES, since=s.started)


def _contained(s: Scenario, exit_code: int, key_checked: bool = True) -> dict:
    assert s.done is not None
    record = check_contained(s.done, s.sandbox, s.env, exit_code=exit_code)
    if key_checked:
        assert _key_hits(s) == []
    return record


def test_links_and_escape_chains_are_skipped_and_listed(runs):
    s = runs["links"]
    record = _contained(s, exit_code=0, key_checked=False)  # see the two tests below
    assert record["status"] == "succeeded"
    folder = run_folder(s.sandbox)
    assert (folder / "output" / "real.txt").read_text() == "real\n"
    by_path = {w.get("path"): w.get("code") for w in record["warnings"]}
    for name in ("./latest", "./pw", "./to-canary", "./fifo", "escape", "stdout.log", "stderr.log"):
        assert by_path.get(name, "").startswith("skipped_"), (name, by_path.get(name))
    assert by_path.get("./hard.txt") == "skipped_hard_link" or by_path.get("./real.txt") == "skipped_hard_link"
    codes = warning_codes(record)
    assert {"unsafe_name", "bad_commits", "claim_too_large"} <= codes, codes
    assert record["agent"]["version"] is None  # 10 MB of it: ignored, not cut and kept
    assert any(w["code"] == "unsafe_name" and "levels deep" in w["message"] for w in record["warnings"])
    # Escape sequences from the agent reach the record as data, never the terminal raw.
    assert "\x1b]52" in record["result_text"]
    assert "\x1b" not in s.done.text and "\x9b" not in s.done.text


def test_the_credential_is_redacted_from_the_files_and_names_the_agent_made(runs):
    s = runs["links"]
    folder = run_folder(s.sandbox)
    assert [hit for hit in _key_hits(s) if hit != str(folder / "result.json")] == []
    assert (folder / "output" / "[redacted:HOSTILE_KEY].txt").read_text() == "a file named after the key\n"
    assert (folder / "output" / "leak.txt").read_text() == "the key: [redacted:HOSTILE_KEY]\n"
    assert (folder / "stderr.log").read_text() == "the key: [redacted:HOSTILE_KEY]\n"


def test_the_credential_is_not_in_the_record(runs):
    s = runs["links"]
    assert s.key not in (run_folder(s.sandbox) / "result.json").read_text()


def test_output_flood_is_cut_at_the_limit(runs):
    s = runs["flood"]
    record = _contained(s, exit_code=0)
    codes = warning_codes(record)
    assert "results_cut" in codes and codes & {"truncated", "over_limit", "bad_archive"}, codes
    folder = run_folder(s.sandbox)
    assert folder_bytes(folder, skip=("ansible.log", "result.json", "prompt.txt")) <= 5 * MIB
    # What the agent printed comes back even when ~/output alone is larger than the limit.
    assert record["result_text"] == "flood done"


def test_a_bomb_swapped_in_by_a_process_left_behind_is_not_unpacked(runs):
    s = runs["bomb-by-background"]
    record = _contained(s, exit_code=3)
    assert (record["status"], record["error"]["phase"]) == ("infra_failed", "fetch")
    assert any(w.get("code") == "bad_archive" and "compressed" in w["message"] for w in record["warnings"])
    assert folder_bytes(run_folder(s.sandbox)) < MIB


def test_a_forged_exit_code_is_not_trusted_and_a_bomb_as_output_tar_is_not_unpacked(runs):
    s = runs["forged-exit-code"]
    record = _contained(s, exit_code=1)
    assert record["status"] == "agent_failed" and record["agent"]["exit_code"] is None
    assert {"bad_summary", "bad_archive"} <= warning_codes(record)
    assert folder_bytes(run_folder(s.sandbox)) < MIB


def test_a_summary_that_is_not_an_object_is_no_record(runs):
    s = runs["summary-list"]
    record = _contained(s, exit_code=3)
    assert (record["status"], record["error"]["phase"]) == ("infra_failed", "fetch")
    assert "bad_summary" in warning_codes(record) and record["agent"]["exit_code"] is None


def test_a_timeout_rewritten_as_success_is_still_a_timeout(runs, hook):
    s = runs["timeout-forged"]
    record = _contained(s, exit_code=4)
    assert record["status"] == "timed_out"
    assert record["agent"]["exit_code"] == 0  # the forged summary did land: the host's clock decided
    alerts = [b for b in hook.bodies if b.get("run_id") == record["run_id"]]
    assert len(alerts) == 1 and alerts[0]["status"] == "timed_out", hook.bodies


def test_garbage_larger_than_the_limit_as_results_tar_is_cut_and_refused(runs):
    s = runs["garbage"]
    record = _contained(s, exit_code=3)
    assert (record["status"], record["error"]["phase"]) == ("infra_failed", "fetch")
    assert {"results_cut", "bad_archive"} <= warning_codes(record)
    assert folder_bytes(run_folder(s.sandbox)) < MIB
