"""Operations tests use the fake golden of tests/integration/conftest.py and the `custom` agent, with a private
agentvm state folder and runs folder per test, so queue and reaper tests see only their own runs."""

from __future__ import annotations

import pytest

from tests.conftest import REPO


@pytest.fixture
def ops_env(fake_golden, tmp_path):
    env = {
        **fake_golden,
        "AGENTVM_RUNS_DIR": str(tmp_path / "runs"),
        "AGENTVM_STATE_DIR": str(tmp_path / "state"),
        "AGENT": "custom",
        "AGENTVM_RETRY_DELAY": "1",
        "PYTHONPATH": str(REPO / "src"),
    }
    for var in ("MAX_VMS", "ALERT_WEBHOOK_URL", "ALERT_COMMAND", "PROMPT", "PROMPT_FILE", "KEEP"):
        env.pop(var, None)
    return env
