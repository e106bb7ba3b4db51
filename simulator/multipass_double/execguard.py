"""Run one command for ``Backend.popen`` and make sure it dies with its caller. Standard library only.

Invoked (by path, ``python -I -S execguard.py CALLER_PID -- ARGV...``) under ``setpriv --pdeathsig TERM``,
so the kernel sends this guard SIGTERM when the calling process dies, however it dies (SIGTERM, SIGKILL,
a crash). The guard starts ARGV (``nsenter ...``) as the leader of a new session and process group. The
inner command and everything it forks stay in that process group; on SIGTERM/SIGINT/SIGHUP the guard
sends SIGTERM to the whole group, then SIGKILL to what is left after a grace period, and exits.

Stdio is inherited unchanged (stdin is forwarded, stdout/stderr stay separate). The exit status mirrors
the command's: its exit code, or death by the same signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from types import FrameType

GRACE_SECONDS = 2.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Guard:
    def __init__(self, argv: list[str]) -> None:
        # Python ignores SIGPIPE and SIGXFSZ, and we ignore FORWARDED until now: reset them for the command.
        defaults = (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED)
        self.pid = os.posix_spawnp(argv[0], argv, dict(os.environ), setsid=True, setsigdef=defaults)
        self.status: int | None = None
        self.stopping = False

    def _reap(self, block: bool) -> None:
        if self.status is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.status = 255 << 8
            return
        if pid == self.pid:
            self.status = status

    def terminate(self, signum: int, _frame: FrameType | None = None) -> None:
        if self.stopping:
            return
        self.stopping = True
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline:
            self._reap(block=False)
            if not _group_alive(self.pid):
                return
            time.sleep(0.05)
        _signal_group(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        while self.status is None:
            self._reap(block=True)
        return self.status


def _exit_like(status: int, stopped_by: int | None) -> None:
    if os.WIFEXITED(status) and stopped_by is None:
        sys.exit(os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else (stopped_by or signal.SIGTERM)
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    sys.exit(128 + sig)


def main(args: list[str]) -> None:
    if len(args) < 3 or args[1] != "--":
        sys.exit("usage: execguard.py CALLER_PID -- ARGV...")
    if os.getppid() != int(args[0]):
        sys.exit(255)  # the caller died before our parent-death signal was armed
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        guard.terminate(signum, frame)

    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_IGN)  # until the command exists
    guard = Guard(args[2:])
    for sig in FORWARDED:
        signal.signal(sig, on_signal)
    status = guard.wait()
    _exit_like(status, received[0] if received else None)


if __name__ == "__main__":
    main(sys.argv[1:])
