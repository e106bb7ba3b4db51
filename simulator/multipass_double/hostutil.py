"""Small host-side helpers for the backend: commands, locks, /proc and the mount table.

Nothing here knows about instances; see ``nspawn.py``, ``network.py`` and ``image.py`` for that.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from multipass_double.errors import BackendError


class HostError(BackendError):
    """A host command failed (the message names the command and its stderr)."""


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 120, input_text: str | None = None) -> str:
    """Run a host command, return its stdout (text). Raise HostError with stderr when it fails."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise HostError(f"`{argv[0]}` is not installed on this host ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise HostError(f"`{' '.join(argv)}` exited with {proc.returncode}: {detail}")
    return proc.stdout


def progress(message: str) -> None:
    """Progress for humans; stderr so that the CLI's stdout stays parseable."""
    print(f"multipass-double: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def file_lock(path: Path, busy_message: str | None = None) -> Iterator[None]:
    """An exclusive flock on ``path`` (created if needed), released on exit or process death.
    ``busy_message`` is printed (stderr) when the lock is held by someone else and we have to wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if busy_message:
                progress(busy_message)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- processes -----------------------------------------------------------------------------------


def host_boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def cmdline(pid: int) -> list[str]:
    """argv of a live process ([] if it is gone, a zombie or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def process_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int) -> bool:
    state = process_state(pid)
    return state is not None and state not in ("Z", "X")


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our own exited child (no-op otherwise)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            found.extend(int(word) for word in text.split())
    return found


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited (reaping it if it is our child). True if it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        reap(pid)
        if not is_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# -- mounts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    target: Path
    fstype: str
    source: str
    options: str  # super options (for overlay: lowerdir=..., upperdir=..., workdir=...)


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[Mount]:
    result: list[Mount] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        result.append(Mount(Path(_unescape(fields[4])), tail[0], _unescape(tail[1]), _unescape(tail[2])))
    return result


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest first."""
    prefix = str(root).rstrip("/") + "/"
    found = {m.target for m in mounts() if str(m.target) == str(root) or str(m.target).startswith(prefix)}
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def is_mounted(path: Path) -> bool:
    return any(m.target == path for m in mounts())


def unmount(path: Path) -> None:
    """Unmount every mount stacked on ``path``; fall back to a lazy detach when it is busy."""
    for _ in range(8):
        if not is_mounted(path):
            return
        try:
            run(["umount", str(path)], timeout=60)
        except HostError:
            run(["umount", "--lazy", str(path)], timeout=60)
    if is_mounted(path):
        raise HostError(f"{path} is still mounted after repeated umount attempts")
