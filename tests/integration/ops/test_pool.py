"""The warm pool on the double: filled by `make pool`, taken by a run exactly once, refilled, recycled when the
golden changes, known to the reaper, drained by `make pool-stop`; a dead keeper's VMs are reaped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentvm.run.record import validate
from tests.conftest import DOUBLE_BIN, REPO

AGENTVM = [sys.executable, "-m", "agentvm"]


def make(*args, env, timeout=900):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def pool_vms(env) -> list[str]:
    proc = subprocess.run(
        [str(DOUBLE_BIN), "list", "--format", "json"], env=env, capture_output=True, text=True, check=True
    )
    return sorted(
        i["name"] for i in json.loads(proc.stdout)["list"] if i["name"].startswith(env["AGENTVM_PREFIX"] + "-pool-")
    )


def wait_for(predicate, what, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def reseal(env, manifest):
    golden = f"{env['AGENTVM_PREFIX']}-golden"
    for argv in (
        ["delete", "--purge", f"{golden}.sealed"],
        ["snapshot", "--name", "sealed", "--comment", json.dumps(manifest), golden],
    ):
        proc = subprocess.run([str(DOUBLE_BIN), *argv], env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.double
def test_pool_lifecycle(ops_env):
    env = {**ops_env, "AGENT_COMMAND": "echo from-pool", "MAX_VMS": "3"}
    try:
        filled = make("pool", "POOL=2", env=env)
        assert filled.returncode == 0, filled.stderr
        first = pool_vms(env)
        assert len(first) == 2
        run = subprocess.run([*AGENTVM, "run", "--json", "x"], env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        record = json.loads(run.stdout)
        validate(record)
        assert record["instance"]["from_pool"] is True and record["instance"]["name"] in first
        assert "clone" not in record["timings"] or record["timings"]["clone"] < 5
        wait_for(lambda: len(pool_vms(env)) == 2 and record["instance"]["name"] not in pool_vms(env), "the refill")
        # make clean leaves a live keeper's pool alone
        clean = make("clean", env=env)
        assert clean.returncode == 0 and "kept (warm pool)" in clean.stdout and len(pool_vms(env)) == 2
        # a new golden recycles the pool
        before = pool_vms(env)
        reseal(env, {"schema": 1, "build_id": "rebuilt", "built_at": "2026-12-02T00:00:00Z"})
        wait_for(lambda: len(pool_vms(env)) == 2 and not set(before) & set(pool_vms(env)), "the recycle")
        stopped = make("pool-stop", env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert pool_vms(env) == []
    finally:
        make("pool-stop", env=env)


@pytest.mark.double
def test_a_dead_keepers_vms_are_reaped(ops_env):
    env = {**ops_env, "MAX_VMS": "2"}
    try:
        assert make("pool", "POOL=1", env=env).returncode == 0
        [vm] = pool_vms(env)
        pid = int(Path(env["AGENTVM_STATE_DIR"], "pool", "keeper.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0,
            "the keeper to die",
            30,
        )
        clean = make("clean", env=env)
        assert clean.returncode == 0 and f"deleted: {vm}" in clean.stdout
        assert pool_vms(env) == []
    finally:
        make("pool-stop", env=env)
