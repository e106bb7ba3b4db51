"""CONNECTION=ssh: the run's tasks go over OpenSSH with a key of the run's own and the clone's pinned host key;
afterwards no key, no known-hosts entry, no control socket and no multiplexing master is left, the host's own
~/.ssh is untouched, and the golden carries no authorised key."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agentvm.run.record import validate
from agentvm.run.sshmode import SshAccess
from tests.conftest import DOUBLE_BIN, REPO

pytestmark = pytest.mark.double


def ssh_state() -> dict[str, str]:
    home = Path.home() / ".ssh"
    return {p.name: p.read_text(errors="replace") for p in home.iterdir()} if home.is_dir() else {}


def test_ssh_mode_run_leaves_nothing_behind(fake_golden, tmp_path):
    env = {**fake_golden, "AGENTVM_RUNS_DIR": str(tmp_path / "runs"), "AGENT": "custom", "PYTHONPATH": str(REPO / "src"),
           "AGENTVM_SCRATCH_DIR": str(tmp_path / "scratch"),
           "AGENT_COMMAND": "sh -c 'cat; echo; test -n \"$SSH_CONNECTION\" || echo no-ssh-env'"}  # fmt: skip
    before = ssh_state()
    proc = subprocess.run(
        [sys.executable, "-m", "agentvm", "run", "--connection", "ssh", "--json", "over ssh"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout)
    validate(record)
    assert record["instance"]["connection"] == "ssh" and record["result_text"].startswith("over ssh")
    run_id = record["run_id"]
    assert not (tmp_path / "scratch" / f"agentvm-{run_id}").exists()
    leftovers = [p for p in (tmp_path / "scratch").rglob("*")] if (tmp_path / "scratch").exists() else []
    assert leftovers == []
    control = SshAccess(tmp_path / "scratch" / f"agentvm-{run_id}").control_dir
    masters = subprocess.run(
        ["pgrep", "-af", f"agentvm-{run_id}|{control.name}"], capture_output=True, text=True
    ).stdout
    assert [m for m in masters.splitlines() if "pgrep" not in m] == []
    assert not control.exists()
    assert ssh_state() == before
    # the golden carries no authorised key: a fresh clone of it has none
    golden = f"{fake_golden['AGENTVM_PREFIX']}-golden"
    probe = f"{fake_golden['AGENTVM_PREFIX']}-t-{uuid.uuid4().hex[:6]}"
    try:
        for argv in (["clone", golden, "--name", probe], ["start", probe]):
            assert subprocess.run([str(DOUBLE_BIN), *argv], env=env, capture_output=True).returncode == 0
        keys = subprocess.run(
            [str(DOUBLE_BIN), "exec", probe, "--", "sh", "-c", "cat ~/.ssh/authorized_keys 2>/dev/null; true"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert "agentvm-run" not in keys.stdout
    finally:
        subprocess.run([str(DOUBLE_BIN), "delete", "--purge", probe], env=env, capture_output=True, check=False)
