"""`make demo` against the session's golden (so its `make golden` step is the no-op): the whole flow with the
real Claude Code CLI and the Messages mock, as a user without Multipass or an API key would watch it."""

from __future__ import annotations

import json
import subprocess

import pytest

from agentvm.run.record import validate
from tests.conftest import REPO

pytestmark = pytest.mark.double


def test_make_demo_succeeds_with_the_mocks_answer(golden, tmp_path):
    env = {**golden.env, "AGENTVM_RUNS_DIR": str(tmp_path / "runs")}
    env.pop("ANTHROPIC_API_KEY", None)  # the demo needs no key of the user's
    proc = subprocess.run(
        ["make", "--no-print-directory", "demo"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [folder] = list((tmp_path / "runs").iterdir())
    record = json.loads((folder / "result.json").read_text())
    validate(record)
    assert record["status"] == "succeeded"
    assert record["result_text"].startswith("Hello from the mock model!")
    assert "is up to date" in proc.stdout  # the golden was reused, not rebuilt
