"""make's variables are data, and the reaper deletes only what belongs to its prefix.

The reaper tests use a double data folder of their own, so that the real prefix ``agentvm`` can be used
without any risk to the session's golden: ``agentvm`` and ``agentvm-run-ci`` each have a golden and an old
run that no state folder records; ``make clean ALL=1`` of one prefix must not touch the other's, and
``make clean ALL=0`` leaves the golden.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DOUBLE_ADMIN, REPO
from tests.integration.hostile.harness import Finished, base_env, instances, launch, multipass

pytestmark = pytest.mark.double

OLD = "20250101t000000-abcdef"  # older than the default grace period of a day


@pytest.fixture(scope="module")
def private_double(double_env, tmp_path_factory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("hostile-make")
    data = REPO / ".cache" / f"hostile-reaper-{uuid.uuid4().hex[:8]}"
    env = base_env(double_env, root / "runs", MULTIPASS_DOUBLE_DATA=str(data), AGENTVM_STATE_DIR=str(root / "state"))
    try:
        for argv in (["launch", "--name", "agentvm-golden"], ["stop", "agentvm-golden"]):
            proc = multipass(env, *argv)
            assert proc.returncode == 0, proc.stderr
        yield env
    finally:
        subprocess.run(
            [sys.executable, str(DOUBLE_ADMIN), "down", "--data", str(data), "--purge", "--quiet"],
            check=False,
            timeout=300,
        )


def _clones(env: dict[str, str], *names: str) -> None:
    for name in names:
        proc = multipass(env, "clone", "agentvm-golden", "--name", name)
        assert proc.returncode == 0, proc.stderr


def _make(env: dict[str, str], logs: Path, *args: str) -> Finished:
    return launch(["make", *args], env, logs).finish(timeout=300)


def test_each_prefix_reaps_only_its_own(private_double, tmp_path):
    env = private_double
    _clones(env, f"agentvm-run-{OLD}", "agentvm-run-ci-golden", f"agentvm-run-ci-run-{OLD}")
    ci = _make(env, tmp_path / "ci", "clean", "ALL=1", "AGENTVM_PREFIX=agentvm-run-ci")
    assert ci.code == 0, ci.text
    assert instances(env) == ["agentvm-golden", f"agentvm-run-{OLD}"], ci.out

    _clones(env, "agentvm-run-ci-golden", f"agentvm-run-ci-run-{OLD}")
    keep = _make(env, tmp_path / "all0", "clean", "ALL=0", "AGENTVM_PREFIX=agentvm")
    assert keep.code == 0, keep.text
    assert f"not ours: agentvm-run-{OLD}" in keep.out
    assert "agentvm-golden" in instances(env) and "agentvm-run-ci-golden" in instances(env)

    every = _make(env, tmp_path / "all1", "clean", "ALL=1", "AGENTVM_PREFIX=agentvm")
    assert every.code == 0, every.text
    assert "deleted: agentvm-golden" in every.out and f"deleted: agentvm-run-{OLD}" in every.out
    assert instances(env) == ["agentvm-run-ci-golden", f"agentvm-run-ci-run-{OLD}"]


def test_make_runs_with_a_shell_command_in_n_is_a_usage_error(private_double, tmp_path):
    done = _make(private_double, tmp_path, "runs", "N=1; echo INJECTED")
    assert done.code != 0
    assert "INJECTED" not in [line.strip() for line in done.text.splitlines()]
    assert "N (--limit) must be a positive whole number" in done.err, done.text


def test_make_show_evaluates_nothing(private_double, tmp_path):
    rel = f"hostile-canary-{uuid.uuid4().hex[:8]}"
    absolute = tmp_path / "show-canary"
    for run in (f"$(shell touch {rel})", f"$(shell touch {absolute})", f"`touch {absolute}`$(touch {absolute})"):
        done = _make(private_double, tmp_path / "show", "show", f"RUN={run}")
        assert done.code != 0 and "Traceback" not in done.text, done.text
    assert not absolute.exists()
    for folder in (REPO, tmp_path, Path.home(), Path("/")):
        assert not (folder / rel).exists()


# -- what the Makefile hands to agentvm (no VM: AGENTVM is replaced by a program that records its input) --------

RECORDER = """#!{python}
import json, os, sys
with open(os.environ["RECORD_TO"], "w") as fh:
    json.dump({{"argv": sys.argv[1:], "PROMPT": os.environ.get("PROMPT")}}, fh)
"""


def _handed(tmp_path: Path, prompt: str) -> dict:
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER.format(python=sys.executable))
    recorder.chmod(0o755)
    record = tmp_path / "handed.json"
    env = {**os.environ, "RECORD_TO": str(record)}
    proc = subprocess.run(
        ["make", "--no-print-directory", "run", f"AGENTVM={recorder}", f"PROMPT={prompt}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(record.read_text())


def test_make_hands_make_and_shell_syntax_over_as_typed(tmp_path):
    rel = f"hostile-canary-{uuid.uuid4().hex[:8]}"
    prompt = f"a $(shell touch {rel}) $$ $$$$ ${{HOME}} $(HOME)\n'q' \"qq\" `touch {rel}` # hash \\\nend \t \n"
    assert _handed(tmp_path, prompt) == {"argv": ["run"], "PROMPT": prompt}
    assert not (REPO / rel).exists()


def test_make_drops_only_the_leading_whitespace_as_documented(tmp_path):
    """GNU make strips the blanks at the start of a command-line value before the Makefile sees it (docs/run.md
    says so and points to PROMPT_FILE); everything after them arrives as typed."""
    prompt = "   indented first line\n  second\n"
    assert _handed(tmp_path, prompt)["PROMPT"] == "indented first line\n  second\n"
    assert "PROMPT_FILE" in (REPO / "docs" / "run.md").read_text().split("drops the whitespace", 1)[1][:200]
