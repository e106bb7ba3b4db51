"""A launched-and-stopped instance as the golden and the `custom` agent (like the run-pipeline tests), with a
private agentvm state folder and runs folder per test, so queue and reaper tests see only their own runs."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.conftest import DOUBLE_BIN, REPO


@pytest.fixture(scope="module")
def ops_golden(double_env):
    prefix = "o" + uuid.uuid4().hex[:6]
    env = dict(double_env)
    env["AGENTVM_PREFIX"] = prefix
    for argv in (["launch", "--name", f"{prefix}-golden"], ["stop", f"{prefix}-golden"]):
        proc = subprocess.run([str(DOUBLE_BIN), *argv], env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    yield env
    subprocess.run(
        [str(DOUBLE_BIN), "delete", "--purge", f"{prefix}-golden"], env=env, capture_output=True, check=False
    )


@pytest.fixture
def ops_env(ops_golden, tmp_path):
    env = {
        **ops_golden,
        "AGENTVM_RUNS_DIR": str(tmp_path / "runs"),
        "AGENTVM_STATE_DIR": str(tmp_path / "state"),
        "AGENT": "custom",
        "AGENTVM_RETRY_DELAY": "1",
        "PYTHONPATH": str(REPO / "src"),
    }
    for var in ("MAX_VMS", "ALERT_WEBHOOK_URL", "ALERT_COMMAND", "PROMPT", "PROMPT_FILE", "KEEP"):
        env.pop(var, None)
    return env
