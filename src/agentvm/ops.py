"""The operational wrapper around one run: liveness lock, opportunistic reaping, the host-wide queue and
VM slot, and alerts afterwards. ``agentvm run`` (cli.py) calls :func:`host_slot` around ``Run.execute()``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agentvm import alerts, reaper, slots
from agentvm.request import RunRequest

QUEUE_TIMEOUT_EXIT = 5


@dataclass(frozen=True)
class Limits:
    state_dir: Path
    max_vms: int
    queue_timeout: int
    reap: bool


def limits(env: Mapping[str, str] = os.environ) -> Limits:
    """Read and check MAX_VMS, AGENTVM_QUEUE_TIMEOUT and AGENTVM_STATE_DIR (UsageError when wrong)."""
    return Limits(
        state_dir=slots.state_dir(env),
        max_vms=slots.max_vms(env),
        queue_timeout=slots.queue_timeout(env),
        reap=(env.get("AGENTVM_REAP") or "1").strip().lower() not in ("0", "no", "false", "off"),
    )


@contextlib.contextmanager
def host_slot(req: RunRequest, lim: Limits, out: TextIO = sys.stderr) -> Iterator[slots.Lease]:
    """Hold the run's liveness lock for the whole block and a VM slot once the queue lets it in.
    Raises :class:`slots.QueueTimeout` when no slot became free in time (nothing was created)."""

    def say(text: str) -> None:
        print(f"agentvm: {text}", file=out, flush=True)

    lease = slots.register(lim.state_dir, req.instance, req.run_id)
    try:
        if lim.reap:
            report = reaper.opportunistic(req.multipass_bin, os.environ, req.prefix)
            if report is not None and report.deleted:
                say(f"reaped {len(report.deleted)} leftover instance(s): {', '.join(report.deleted)}")
        slots.wait_for_slot(lim.state_dir, lease, req.run_id, lim.max_vms, lim.queue_timeout, say)
        yield lease
    finally:
        lease.release()


def alert(record: dict[str, Any], run_dir: Path, out: TextIO = sys.stderr) -> None:
    for problem in alerts.send(record, run_dir):
        print(f"agentvm: warning: {problem}", file=out, flush=True)
