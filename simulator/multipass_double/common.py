"""Shared pieces of the command implementations: failures, the context, names, sizes and images."""

from __future__ import annotations

import datetime as dt
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from multipass_double.backend import Backend
from multipass_double.config import Paths
from multipass_double.state import Record, Store

DEFAULT_TIMEOUT = 300
TIMEOUT_EXIT = 5
MIN_MEMORY = 128 * 1024**2
MIN_DISK = 512 * 1024**2
DEFAULT_MEMORY = 1024**3
DEFAULT_DISK = 5 * 1024**3

NAME_RE = re.compile(r"^([a-zA-Z]|[a-zA-Z][a-zA-Z0-9\-]*[a-zA-Z0-9])$")
SIZE_RE = re.compile(r"\s*(\d+)(?:\.(\d+)(?=[KMG]))?(?:([KMG])(?:i?B)?|B)?\s*", re.IGNORECASE)

# Release title -> aliases, as `multipass find` shows them (the double boots Debian for all of them).
IMAGES: dict[str, tuple[str, ...]] = {
    "24.04 LTS": ("24.04", "noble", "n", "lts", "default", "ubuntu"),
    "22.04 LTS": ("22.04", "jammy", "j"),
    "20.04 LTS": ("20.04", "focal", "f"),
}
REMOTES = ("release", "daily")


class Fail(Exception):
    """End the command: ``stderr`` (and ``stdout``) are printed verbatim, then exit with ``code``."""

    def __init__(self, code: int, stderr: str = "", stdout: str = "") -> None:
        super().__init__(stderr)
        self.code = code
        self.stderr = stderr
        self.stdout = stdout


class Killed(BaseException):
    """End the process by re-raising ``signum`` on itself (after the trace line is written)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def failed(command: str, message: str, details: str = "") -> Fail:
    """``standard_failure_handler_for``: ``<cmd> failed: <message>\\n[<details>\\n]``, exit 2."""
    return Fail(2, f"{command} failed: {message}\n" + (f"{details}\n" if details else ""))


def errors_occurred(command: str, lines: list[str]) -> Fail:
    return failed(command, "The following errors occurred:\n" + "\n".join(lines))


def usage(message: str) -> Fail:
    return Fail(1, message + "\n")


def log_line(level: str, category: str, message: str) -> str:
    stamp = dt.datetime.now().isoformat(timespec="milliseconds")
    return f"[{stamp}] [{level}] [{category}] {message}\n"


def unhandled(message: str) -> Fail:
    return Fail(1, log_line("error", "client", f"Caught an unhandled exception: {message}"))


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name))


def parse_size(text: str) -> int | None:
    """``MemorySize``: bytes, or None when the text is not a size."""
    match = SIZE_RE.fullmatch(text)
    if not match:
        return None
    whole, frac, unit = match.groups()
    multiplier = {None: 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit.upper() if unit else None]
    value = int(whole) * multiplier
    if frac:
        value += int(int(frac) * multiplier / 10 ** len(frac))
    return value


def size_error(text: str) -> Fail:
    return unhandled(
        f"{text} is not a valid memory size - need a non-negative integer (in base 10) or a decimal "
        "followed by K, M, or G (e.g. 1234B, 42MiB, 0.5G)"
    )


def resolve_image(image: str | None) -> tuple[str, str] | Fail:
    """(remote, release title) for an image argument, or the Fail to raise."""
    remote, alias = "", image or "default"
    if image and ":" in image and not image.startswith(("http://", "https://", "file://")):
        remote, _, alias = image.partition(":")
        if remote not in REMOTES or ":" in alias:
            return usage("Invalid remote and source image name supplied")
    for title, aliases in IMAGES.items():
        if alias in aliases:
            return remote, title
    return failed("launch", f'Unable to find an image matching "{alias}" in remote "{remote}".')


ADJECTIVES = ("natty", "brave", "calm", "eager", "gentle", "jolly", "lively", "proud", "silly", "witty")
ANIMALS = ("nilgai", "otter", "heron", "lynx", "marten", "ibex", "gecko", "tapir", "okapi", "wombat")


def petname(taken: set[str]) -> str:
    while True:
        name = f"{random.choice(ADJECTIVES)}-{random.choice(ANIMALS)}"
        if name not in taken:
            return name


@dataclass
class Context:
    paths: Paths
    store: Store
    out: BinaryIO = field(default_factory=lambda: sys.stdout.buffer)
    err: BinaryIO = field(default_factory=lambda: sys.stderr.buffer)
    _backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = Backend(self.paths)
        return self._backend

    def ssh_public_key(self) -> str | None:
        """The double's own key pair (like the daemon's), so the host can also ssh in as `ubuntu`."""
        key = self.paths.data / "ssh-keys" / "id_ed25519"
        if not key.exists():
            if shutil.which("ssh-keygen") is None:
                return None
            key.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ubuntu@localhost", "-f", str(key)],
                check=True,
                stdin=subprocess.DEVNULL,
            )
        return key.with_suffix(".pub").read_text().strip()

    def print(self, text: str) -> None:
        # surrogateescape: bytes that came in undecodable (argv, a cut UTF-8 sequence) go out unchanged
        self.out.write(text.encode("utf-8", "surrogateescape"))
        self.out.flush()

    def eprint(self, text: str) -> None:
        self.err.write(text.encode())
        self.err.flush()


def live_state(ctx: Context, rec: Record) -> str:
    """The state to report, reconciled with the backend (an instance whose container died is Stopped)."""
    if rec["deleted"]:
        return "Deleted"
    state = rec["state"]
    if state in ("Starting", "Restarting") and not _pid_alive(rec.get("worker_pid")):
        # the process booting it is gone (killed): whatever it left behind
        return "Running" if ctx.backend.is_running(ctx.store.spec(rec)) else "Stopped"
    if state in ("Running", "Unknown", "Restarting") and not ctx.backend.is_running(ctx.store.spec(rec)):
        return "Stopped"
    return state


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def reconcile(ctx: Context, state: dict[str, Any]) -> None:
    """Write live states back into the records (call with the global lock held)."""
    for rec in state["instances"].values():
        if not rec["deleted"]:
            rec["state"] = live_state(ctx, rec)
