"""Batch file parsing, reaper targets and history listing, without VMs."""

from __future__ import annotations

import json

import pytest

from agentvm import batch, history, reaper
from agentvm.errors import UsageError


def test_batch_file_with_defaults_and_relative_paths(tmp_path):
    (tmp_path / "t.md").write_text("task")
    (tmp_path / "proj").mkdir()
    f = tmp_path / "p.yaml"
    f.write_text(
        "defaults: {agent: custom, timeout: 60}\nprompts:\n  - hello\n  - {prompt_file: t.md, workspace: proj}\n"
    )
    first, second = batch.load(f)
    assert first.prompt == b"hello" and first.env == {"AGENT": "custom", "TIMEOUT": "60"}
    assert second.prompt is None and second.env["PROMPT_FILE"] == str(tmp_path / "t.md")
    assert second.env["WORKSPACE"] == str(tmp_path / "proj")


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


def test_reaper_targets():
    names = ["a-run-1", "a-golden", "a-golden-build-x", "b-run-2", "a-runner", "a-t-1"]
    assert reaper.targets(names, "a", include_golden=False) == ["a-run-1"]
    assert reaper.targets(names, "a", include_golden=True) == ["a-golden", "a-golden-build-x", "a-run-1"]


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
    lines = history.table(tmp_path, state_dir=tmp_path / "state").splitlines()
    assert lines[1].startswith("20260103t000000-cccccc") and "incomplete" in lines[1]
    assert "agent_failed" in lines[2] and "line one" in lines[2] and "line two" not in lines[2]
    with pytest.raises(LookupError, match="no run matching"):
        history.show(tmp_path, "1999")
