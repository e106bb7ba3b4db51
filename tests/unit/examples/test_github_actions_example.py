"""examples/github-actions/agentvm.yml: lint clean, only make targets and agentvm commands that exist, no event
text inside a `run:` script, and its prompt step keeps hostile comment text as data when a real shell runs it."""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agentvm import cli
from tests.unit.examples.lint import ROOT, lint_problems, load

WORKFLOW = "github-actions/agentvm.yml"
MAKE_WORD = re.compile(r"(?:^|[;&|(]\s*|\s)make\s+([A-Za-z0-9_-]+)")


def _workflow() -> dict[str, Any]:
    workflow = load(WORKFLOW)
    if True in workflow:  # YAML 1.1 reads the key `on` as true
        workflow["on"] = workflow.pop(True)
    return workflow


def _job() -> dict[str, Any]:
    (job,) = _workflow()["jobs"].values()
    return job


def _scripts(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def _injections(workflow: dict[str, Any]) -> list[str]:
    """`run:` scripts holding a `${{ }}` expression: GitHub pastes its value into the script before the shell reads
    it, so event text there (a comment, an input, a branch name) is shell code. Values go through `env:`."""
    return [script for script in _scripts(workflow) if "${{" in script]


def test_lint_clean() -> None:
    assert lint_problems(WORKFLOW) == []


def test_runner_and_triggers() -> None:
    workflow = _workflow()
    assert _job()["runs-on"] == ["self-hosted", "linux", "multipass"]
    assert workflow["on"]["workflow_dispatch"]["inputs"]["prompt"]["required"] is True
    assert "issue_comment" in workflow["on"]
    condition = _job()["if"]
    assert "'/agentvm '" in condition and "author_association" in condition
    assert workflow["permissions"] == {"contents": "read"}


def test_no_expression_inside_run_scripts() -> None:
    assert _injections(_workflow()) == []


INJECTIONS = [
    ("comment body", "printf '%s' '${{ github.event.comment.body }}' > prompt.txt"),
    ("dispatch input", 'make run PROMPT="${{ inputs.prompt }}"'),
    ("branch name", "echo ${{ github.head_ref }}"),
]


@pytest.mark.parametrize(("case", "script"), INJECTIONS, ids=[c for c, _ in INJECTIONS])
def test_injection_check_can_fail(case: str, script: str) -> None:
    workflow = copy.deepcopy(_workflow())
    next(iter(workflow["jobs"].values()))["steps"].append({"name": case, "run": script})
    assert _injections(workflow), f"not caught: {case}"


def _make_targets_used() -> set[str]:
    return {m for script in _scripts(_workflow()) for m in MAKE_WORD.findall(script)}


def _help_targets() -> set[str]:
    out = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _recipe(target: str) -> list[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.M)
    assert match, f"no recipe for {target}"
    return [line.strip().lstrip("@") for line in match.group(1).splitlines()]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_targets_exist_in_make_help() -> None:
    used = _make_targets_used()
    assert {"setup", "golden", "run", "clean"} <= used
    assert used <= _help_targets()


def test_agentvm_commands_of_those_targets_exist() -> None:
    """Each target the workflow uses that runs `$(AGENTVM) <command> ...` names a command agentvm parses."""
    seen = set()
    for target in sorted(_make_targets_used()):
        for line in _recipe(target):
            words = shlex.split(line)
            if words and words[0] == "$(AGENTVM)":
                args = cli.parser().parse_args(words[1:])  # exits (SystemExit) on an unknown command
                seen.add(args.command)
    assert {"golden", "run", "show", "clean"} <= seen


def test_artifact_and_cleanup_run_always() -> None:
    job = _job()
    steps = job["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@")
    (upload,) = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()"
    assert upload["with"]["path"].rstrip("/") == job["env"]["AGENTVM_RUNS_DIR"]
    assert steps[-1]["run"].strip() == "make clean" and steps[-1]["if"] == "always()"
    assert "PROMPT_FILE" in job["env"]


def _prompt_step() -> dict[str, Any]:
    (step,) = [s for s in _job()["steps"] if "PROMPT_TEXT" in s.get("env", {})]
    assert "github.event.comment.body" in step["env"]["PROMPT_TEXT"]
    return step


HOSTILE = [
    ("comment", "/agentvm fix $(touch {canary}) `touch {canary}` ; touch {canary}", "fix $(touch {canary})"),
    ("dispatch", 'it\'s "quoted" ${{HOME}} $HOME\nsecond line; touch {canary}', 'it\'s "quoted" ${{HOME}} $HOME'),
]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize(("case", "text", "starts"), HOSTILE, ids=[c for c, _, _ in HOSTILE])
def test_prompt_step_keeps_hostile_text_as_data(tmp_path: Path, case: str, text: str, starts: str) -> None:
    """The step's script, run by bash as the runner does (`bash -e`), with hostile event text in PROMPT_TEXT."""
    canary = tmp_path / "canary"
    text, starts = text.format(canary=canary), starts.format(canary=canary)
    prompt_file = tmp_path / "prompt.txt"
    env = {"PATH": os.environ["PATH"], "PROMPT_TEXT": text, "PROMPT_FILE": str(prompt_file)}
    subprocess.run(["bash", "-e", "-c", _prompt_step()["run"]], env=env, cwd=tmp_path, check=True)
    written = prompt_file.read_text(encoding="utf-8")
    assert written == text.removeprefix("/agentvm ") + "\n"
    assert written.startswith(starts)
    assert not canary.exists()
