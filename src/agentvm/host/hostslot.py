"""The host-wide wrapper around one run: liveness lock, opportunistic reap, the FIFO queue and a VM slot.

``agentvm run`` and the Python API hold ``host_slot()`` around the pipeline; the service's worker does the
same, so direct runs and service runs share this host's ``MAX_VMS``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from agentvm.host import reaper, slots
from agentvm.host.state import StateDir
from agentvm.multipass import Multipass
from agentvm.settings import Settings


@contextlib.contextmanager
def host_slot(
    settings: Settings,
    instance: str,
    run_id: str,
    mp: Multipass,
    out: TextIO = sys.stderr,
    cap: int | Callable[[], int] | None = None,
) -> Iterator[slots.Lease]:
    """Hold the run's liveness lock for the whole block and a VM slot once the queue lets it in.
    Raises ``QueueTimeout`` when no slot became free in time (nothing was created)."""

    def say(text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(f"agentvm: {text}", file=out, flush=True)

    state = StateDir(settings.state_dir).ensure()
    lease = slots.register(state.root, instance, run_id)
    try:
        if settings.reap:
            report = reaper.opportunistic(settings, mp)
            if report is not None and report.deleted:
                say(f"reaped {len(report.deleted)} leftover instance(s) of dead runs: {', '.join(report.deleted)}")
        slots.wait_for_slot(state.root, lease, run_id, cap or settings.max_vms, settings.queue_timeout, say)
        yield lease
    finally:
        lease.release()
