"""Liveness locks, the FIFO queue and the VM slots, with real processes and real flock locks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from agentvm import settings as settings_mod
from agentvm.errors import QueueTimeout, UsageError
from agentvm.host import slots
from agentvm.host.state import StateDir
from tests.conftest import REPO

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agentvm.host import slots
    directory = Path(sys.argv[1])
    lease = slots.register(directory, sys.argv[2], sys.argv[3])
    slots.wait_for_slot(directory, lease, sys.argv[3], int(sys.argv[4]), 60, lambda t: print(t, flush=True))
    print("GOT", flush=True)
    time.sleep(600)
    """
)


def holder(directory, name, cap):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), f"p-run-{name}", name, str(cap)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_line(proc, text, timeout=30):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} not seen: {lines}")


def test_default_max_vms_follows_cpus_and_memory():
    gib = 1024**3
    assert settings_mod.default_max_vms(cpus=8, memory=64 * gib) == 8
    assert settings_mod.default_max_vms(cpus=8, memory=10 * gib) == 2
    assert settings_mod.default_max_vms(cpus=1, memory=1 * gib) == 1


@pytest.mark.parametrize("value", ["0", "-1", "two", "²", "1 ", "+1", "٣"])
def test_max_vms_must_be_positive(value):
    with pytest.raises(UsageError, match="MAX_VMS must be a positive whole number"):
        settings_mod.Settings.load({"MAX_VMS": value})


def test_liveness_lock_is_dropped_when_the_process_is_killed(tmp_path):
    directory = StateDir(tmp_path).ensure().root
    proc = holder(directory, "a", 1)
    try:
        wait_line(proc, "GOT")
        lock = StateDir(directory).alive_lock("p-run-a")
        assert slots.is_locked(lock)
        assert not slots.remove_if_stale(lock)
    finally:
        proc.kill()
        proc.wait()
    assert not slots.is_locked(lock)
    assert slots.remove_if_stale(lock) and not lock.exists()


def test_queue_is_fifo_and_shows_positions(tmp_path):
    directory = StateDir(tmp_path).ensure().root
    first = holder(directory, "a", 1)
    procs = [first]
    try:
        wait_line(first, "GOT")
        second = holder(directory, "b", 1)
        procs.append(second)
        assert "position 1 of 1" in wait_line(second, "queued")[-1]
        third = holder(directory, "c", 1)
        procs.append(third)
        assert "position 2 of 2" in wait_line(third, "queued")[-1]
        first.kill()  # the slot and the liveness lock go with the process, even on SIGKILL
        wait_line(second, "GOT")
        assert "position 1 of 1" in wait_line(third, "queued")[-1]
        second.kill()
        wait_line(third, "GOT")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_queue_wait_limit_gives_a_clear_timeout(tmp_path):
    directory = StateDir(tmp_path).ensure().root
    proc = holder(directory, "a", 1)
    try:
        wait_line(proc, "GOT")
        lease = slots.register(directory, "p-run-b", "b")
        with pytest.raises(QueueTimeout, match=r"AGENTVM_QUEUE_TIMEOUT=1 s .*MAX_VMS=1"):
            slots.wait_for_slot(directory, lease, "b", 1, 1, lambda _t: None)
        lease.release()
        assert list((directory / "queue").iterdir()) == []
    finally:
        proc.kill()
        proc.wait()
