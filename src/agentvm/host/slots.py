"""Host-wide run state: a liveness lock per run, a FIFO queue and the VM slots of the concurrency cap.

Everything lives in the host's state folder (state.py) and is shared by every agentvm process on the host:

``alive/<instance>.lock``  held (``flock`` exclusive) by the run for its whole life: alive ⇔ locked. The
                           kernel drops the lock when the process dies, even after ``kill -9``.
``queue/<ns>-<run>``       one ticket per waiting run, held the same way; the oldest live ticket is the head.
``slots/<n>.lock``         ``MAX_VMS`` slot locks; only the head of the queue may take the first free one.
``queue.lock``             serialises the queue's bookkeeping (creating, ordering and removing tickets).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agentvm.errors import QueueTimeout

POLL_SECONDS = 0.25


def _try_lock(fh: IO[str]) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def hold(path: Path, content: str = "") -> IO[str] | None:
    """Open ``path`` and take its exclusive lock without waiting; None when someone else holds it.

    A lock on a file that a reaper unlinked in between is worthless, so the path must still name the
    locked inode afterwards."""
    while True:
        fh = open(path, "a+")  # noqa: SIM115 - the caller keeps it open for as long as it holds the lock
        if not _try_lock(fh):
            fh.close()
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            if content:
                fh.truncate(0)
                fh.write(content)
                fh.flush()
            return fh
        fh.close()


def is_locked(path: Path) -> bool:
    """True when a live process holds ``path``'s lock (the probe takes and drops a shared lock)."""
    try:
        fh = open(path)  # noqa: SIM115
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def remove_if_stale(path: Path) -> bool:
    """Delete a lock file nobody holds; False when it is held (or already gone)."""
    fh = hold(path)
    if fh is None:
        return False
    with fh:
        path.unlink(missing_ok=True)
    return True


def alive_lock(directory: Path, instance: str) -> Path:
    return directory / "alive" / f"{instance}.lock"


@contextlib.contextmanager
def queue_lock(directory: Path) -> Iterator[None]:
    with open(directory / "queue.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _live_tickets(directory: Path) -> list[Path]:
    """Tickets in order, after deleting those whose process is gone (call with the queue lock held)."""
    tickets = sorted((directory / "queue").iterdir())
    return [t for t in tickets if not remove_if_stale(t)]


def _take_free_slot(directory: Path, cap: int) -> IO[str] | None:
    for n in range(cap):
        fh = hold(directory / "slots" / f"{n}.lock", content=f"{os.getpid()}\n")
        if fh is not None:
            return fh
    return None


@dataclass
class Lease:
    """What a run holds while it lives: its liveness lock and (after the queue) a VM slot."""

    alive: IO[str]
    path: Path
    slot: IO[str] | None = None
    waited: float = 0.0

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()  # still holding the lock: nobody can mistake the file for a dead run's
        for fh in (self.slot, self.alive):
            if fh is not None:
                with contextlib.suppress(OSError, ValueError):
                    fh.close()
        self.slot = None


def register(directory: Path, instance: str, run_id: str) -> Lease:
    """Take the run's liveness lock (before its instance can exist)."""
    record = json.dumps({"run_id": run_id, "instance": instance, "pid": os.getpid(), "since": time.time()})
    deadline = time.monotonic() + 10
    path = alive_lock(directory, instance)
    while (fh := hold(path, content=record + "\n")) is None:
        # A reaper probing the file holds it for an instant; a run id is never reused.
        if time.monotonic() > deadline:
            raise RuntimeError(f"the liveness lock of {instance} is held by another process")
        time.sleep(0.05)
    return Lease(alive=fh, path=path)


def wait_for_slot(
    directory: Path,
    lease: Lease,
    run_id: str,
    cap: int | Callable[[], int],
    timeout: float,
    say: Callable[[str], None],
) -> None:
    """Queue (FIFO) until this run's ticket is at the head and a slot is free; take the slot. ``cap`` may be a
    function (MAX_VMS minus the warm pool's ready VMs, which count against it), asked at every look."""
    started = time.monotonic()
    with queue_lock(directory):
        ticket = directory / "queue" / f"{time.time_ns():020d}-{run_id}"
        ticket_fh = hold(ticket, content=f"{os.getpid()}\n")
    assert ticket_fh is not None
    shown: tuple[int, int] | None = None
    try:
        while True:
            with queue_lock(directory):
                tickets = _live_tickets(directory)
                position = tickets.index(ticket) if ticket in tickets else 0
                limit = max(1, cap() if callable(cap) else cap)
                if position == 0:
                    lease.slot = _take_free_slot(directory, limit)
                    if lease.slot is not None:
                        ticket.unlink(missing_ok=True)
                        break
            if shown != (position, len(tickets)):
                shown = (position, len(tickets))
                say(f"queued: position {position + 1} of {len(tickets)} (MAX_VMS={limit}, all slots busy)")
            waited = time.monotonic() - started
            if waited > timeout:
                raise QueueTimeout(
                    f"no VM slot became free within AGENTVM_QUEUE_TIMEOUT={int(timeout)} s (position {position + 1} "
                    f"of {len(tickets)}, MAX_VMS={limit}): raise MAX_VMS or AGENTVM_QUEUE_TIMEOUT, or retry later"
                )
            time.sleep(POLL_SECONDS)
    finally:
        with queue_lock(directory):
            ticket.unlink(missing_ok=True)
        ticket_fh.close()
    lease.waited = time.monotonic() - started
    if shown is not None:
        say(f"got a VM slot after {lease.waited:.1f} s in the queue")
