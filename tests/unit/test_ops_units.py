"""Batch file parsing, reaper targets and history listing, without VMs."""

from __future__ import annotations

import json

import pytest

from agentvm.errors import UsageError
from agentvm.host import batch, history, reaper
from agentvm.settings import Settings


def test_batch_file_with_defaults_and_relative_paths(tmp_path):
    (tmp_path / "t.md").write_text("task")
    (tmp_path / "proj").mkdir()
    f = tmp_path / "p.yaml"
    f.write_text(
        "defaults: {agent: custom, timeout: 60}\nprompts:\n  - hello\n  - {prompt_file: t.md, workspace: proj}\n"
    )
    first, second = batch.load(f)
    assert first.inp.prompt == b"hello" and (first.inp.agent, first.inp.timeout) == ("custom", 60)
    assert second.inp.prompt is None and second.inp.prompt_file == str(tmp_path / "t.md")
    assert second.inp.workspace == str(tmp_path / "proj")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "non-empty list"),
        ("- {prompt: a, colour: red}", "unknown key 'colour'"),
        ("- {prompt: a, prompt_file: b}", "exactly one of prompt and prompt_file"),
        ("- [1]", "item 1"),
        ("- {prompt: [", "not valid YAML"),
    ],
)
def test_bad_batch_files_are_refused(tmp_path, text, message):
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(UsageError, match=message):
        batch.load(f)


@pytest.mark.parametrize(
    ("name", "owned", "golden"),
    [
        ("a-run-20260101t000000-abcdef", True, False),
        ("a-pool-20260101t000000-abcdef", True, False),
        ("a-golden", False, True),
        ("a-golden-build-20260101t000000-abcd", False, True),
        ("a-golden-verify-abcdef", False, True),
        ("a-run-ci-golden", False, False),  # the golden of prefix a-run-ci is never a run of prefix a
        ("a-run-1", False, False),
        ("a-runner", False, False),
        ("b-run-20260101t000000-abcdef", False, False),
        ("a-run-20260101t000000-abcdef-x", False, False),
        ("a-golden-x", False, False),
    ],
)
def test_reaper_matches_names_by_a_strict_pattern(name, owned, golden):
    owned_re, golden_re = reaper.patterns("a")
    assert (bool(owned_re.match(name)), bool(golden_re.match(name))) == (owned, golden)


def test_reaper_age_comes_from_the_run_id():
    import calendar

    now = calendar.timegm((2026, 1, 2, 0, 0, 0))
    assert reaper.age_seconds("a-run-20260101t000000-abcdef", now) == 86400
    assert reaper.age_seconds("a-golden", now) is None


def test_history_table_lists_newest_first(tmp_path):
    for run_id, status in (("20260101t000000-aaaaaa", "succeeded"), ("20260102t000000-bbbbbb", "agent_failed")):
        (tmp_path / run_id).mkdir()
        record = {
            "run_id": run_id,
            "status": status,
            "agent": {"name": "custom"},
            "timings": {"total": 3.0},
            "result_text": "line one\nline two",
            "error": None,
        }
        (tmp_path / run_id / "result.json").write_text(json.dumps(record))
    (tmp_path / "20260103t000000-cccccc").mkdir()
    settings = Settings.load({"AGENTVM_RUNS_DIR": str(tmp_path), "AGENTVM_STATE_DIR": str(tmp_path / "state")})
    lines = history.table(settings).splitlines()
    assert lines[1].startswith("20260103t000000-cccccc") and "incomplete" in lines[1]
    assert "agent_failed" in lines[2] and "line one" in lines[2] and "line two" not in lines[2]
    with pytest.raises(LookupError, match="no run matching"):
        history.show(settings, "1999")
