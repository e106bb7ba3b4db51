"""What the hostile-agent acceptance tests share: processes measured with ``wait4``, a sandbox folder whose
every entry is compared before and after a run, the checks every hostile run must pass, and a search of the
host for a secret marker.

A run is started with :func:`launch` (its own session, so a test can signal its whole process group the way
a terminal's Ctrl-C does) and finished with :meth:`Launched.finish`, which reaps it with ``os.wait4``: the
peak resident memory returned is that of the agentvm process and of every descendant it waited for
(ansible-playbook, the multipass clients and, on the double, the commands run in the instance).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agentvm.errors import EXIT_CODES, Status
from agentvm.run.record import validate
from tests.conftest import DOUBLE_BIN, REPO

AGENTVM = [sys.executable, "-m", "agentvm"]
#: The most the agentvm process tree may take, whatever the agent sends back (a run takes about 60 MB).
MAX_RSS_MB = 300
CANARY_TEXT = b"canary: must never change\n"
#: Variables of the session's environment that would change what a run does.
DROPPED = ("MAX_VMS", "ALERT_WEBHOOK_URL", "ALERT_COMMAND", "PROMPT", "PROMPT_FILE", "PROMPTS", "KEEP", "MODEL")


# -- processes --------------------------------------------------------------------------------------


@dataclass
class Finished:
    code: int
    out: str
    err: str
    maxrss_mb: float
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err


# The measured process tree is started by this small launcher, not forked from the pytest worker: a child's
# ru_maxrss counts the pages it shares with its parent at fork, so a child of a grown worker (hundreds of MB
# after other modules ran there) would report the worker's size. The launcher waits for the command, writes the
# peak RSS of its process tree (KiB) to the file named first, and exits with the command's code; SIGINT, SIGTERM
# and SIGHUP sent to the group reach the command (the launcher's handlers do nothing; they reset at exec).
LAUNCHER = r"""
import resource, signal, subprocess, sys
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, lambda *_: None)
proc = subprocess.Popen(sys.argv[2:])
while True:
    try:
        code = proc.wait()
        break
    except InterruptedError:
        continue
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code if code >= 0 else 128 - code)
"""


class Launched:
    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        logs: Path,
        stdin: bytes | None = None,
        cwd: Path = REPO,
    ) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path = logs / "stdout.txt"
        self.err_path = logs / "stderr.txt"
        stdin_path = logs / "stdin.bin"
        stdin_path.write_bytes(stdin or b"")
        self.rss_path = logs / "maxrss.txt"
        self.started = time.monotonic()
        wrapped = [sys.executable, "-c", LAUNCHER, str(self.rss_path), *argv]
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err, stdin_path.open("rb") as inp:
            self.proc = subprocess.Popen(
                wrapped, env=dict(env), cwd=cwd, stdin=inp, stdout=out, stderr=err, start_new_session=True
            )
        self.result: Finished | None = None

    def stderr(self) -> str:
        return self.err_path.read_bytes().decode("utf-8", "replace")

    def wait_for(self, text: str, timeout: float = 300) -> bool:
        """Wait until ``text`` appears on the process's stderr (False: it ended or the time ran out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr():
                return True
            if self.proc.poll() is not None:
                return text in self.stderr()
            time.sleep(0.2)
        return False

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def _maxrss_kib(self) -> float:
        """The command tree's peak RSS as the launcher saw it (0 when the launcher was killed with it)."""
        try:
            return float(self.rss_path.read_text() or 0)
        except (OSError, ValueError):
            return 0.0

    def finish(self, timeout: float = 600) -> Finished:
        if self.result is not None:
            return self.result
        deadline = time.monotonic() + timeout
        while True:
            pid, status, _usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                with_group = self.proc.pid
                os.killpg(with_group, signal.SIGKILL)
                raise AssertionError(f"{self.proc.args!r} did not finish within {timeout} s:\n{self.stderr()[-4000:]}")
            time.sleep(0.2)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.result = Finished(
            code=self.proc.returncode,
            out=self.out_path.read_bytes().decode("utf-8", "replace"),
            err=self.stderr(),
            maxrss_mb=self._maxrss_kib() / 1024,
            seconds=time.monotonic() - self.started,
        )
        return self.result


def launch(args: list[str], env: Mapping[str, str], logs: Path, stdin: bytes | None = None) -> Launched:
    """``python -m agentvm <args>``, or ``make <args>`` when ``args[0] == "make"``."""
    argv = ["make", "--no-print-directory", *args[1:]] if args and args[0] == "make" else [*AGENTVM, *args]
    return Launched(argv, env, logs, stdin=stdin)


def base_env(session_env: Mapping[str, str], runs: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in session_env.items() if k not in DROPPED}
    env.update(
        AGENTVM_RUNS_DIR=str(runs),
        AGENT="custom",
        PYTHONPATH=str(REPO / "src"),
        ANSIBLE_NOCOLOR="1",
        AGENTVM_RETRY_DELAY="1",
    )
    env.update(extra)
    return env


def multipass(env: Mapping[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DOUBLE_BIN), *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def instances(env: Mapping[str, str]) -> list[str]:
    proc = multipass(env, "list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return sorted(i["name"] for i in json.loads(proc.stdout)["list"])


def run_instances(env: Mapping[str, str]) -> list[str]:
    prefix = env["AGENTVM_PREFIX"] + "-run-"
    return [name for name in instances(env) if name.startswith(prefix)]


# -- the sandbox --------------------------------------------------------------------------------------


def _entry(path: Path) -> tuple:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir", stat.S_IMODE(st.st_mode))
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        return ("file", stat.S_IMODE(st.st_mode), st.st_nlink, st.st_size, digest.hexdigest())
    return ("other", st.st_mode)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below ``root`` (not following links): type, mode, link count, size, content, link target."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = _entry(path)
    return found


@dataclass
class Sandbox:
    """A folder that holds a canary file and the runs folder (so it is the runs folder's parent)."""

    root: Path
    before: dict[str, tuple]

    @classmethod
    def create(cls, root: Path) -> Sandbox:
        root.mkdir(parents=True, exist_ok=True)
        (root / "canary.txt").write_bytes(CANARY_TEXT)
        (root / "runs").mkdir(mode=0o755)
        return cls(root, snapshot(root))

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def canary(self) -> Path:
        return self.root / "canary.txt"

    def changes_outside(self, allowed: Iterable[str]) -> list[str]:
        """Entries created, changed or removed anywhere but below the ``allowed`` relative paths."""
        after = snapshot(self.root)
        allowed = list(allowed)
        changed = sorted(k for k in set(self.before) | set(after) if self.before.get(k) != after.get(k))
        return [k for k in changed if not any(k == a or k.startswith(a + "/") for a in allowed)]


# -- the checks of every hostile run ------------------------------------------------------------------------


def run_folder(sandbox: Sandbox) -> Path:
    entries = sorted(sandbox.runs.iterdir())
    assert len(entries) == 1, f"expected exactly the run folder in {sandbox.runs}, found {[e.name for e in entries]}"
    return entries[0]


def check_contained(done: Finished, sandbox: Sandbox, env: Mapping[str, str], *, exit_code: int | None) -> dict:
    """What no hostile agent may cause, whatever else it did; returns the run's record.

    Only the run folder changed below the sandbox (the canary untouched, no scratch left); result.json is
    valid; the exit code is the one documented for the record's status; no traceback; bounded memory; no
    link, device or FIFO in the run folder; no instance left."""
    folder = run_folder(sandbox)
    assert sandbox.canary.read_bytes() == CANARY_TEXT
    outside = sandbox.changes_outside([f"runs/{folder.name}"])
    assert outside == [], f"changed outside the run folder: {outside[:20]}"
    record = json.loads((folder / "result.json").read_text())
    validate(record)
    assert record["exit_code"] == EXIT_CODES[Status(record["status"])]
    if exit_code is not None:
        assert done.code == exit_code, (
            f"exit {done.code}, expected {exit_code}; status {record['status']}, error {record['error']}\n"
            f"{done.err[-3000:]}"
        )
        assert record["exit_code"] == exit_code
    assert "Traceback" not in done.text, done.text[-4000:]
    assert done.maxrss_mb < MAX_RSS_MB, f"the agentvm process tree peaked at {done.maxrss_mb:.0f} MB"
    for path in folder.rglob("*"):
        mode = os.lstat(path).st_mode
        assert stat.S_ISREG(mode) or stat.S_ISDIR(mode), f"{path} is neither a regular file nor a folder"
    assert not Path(f"/dev/shm/agentvm-{folder.name}").exists()
    assert run_instances(env) == []
    return record


def warning_codes(record: dict) -> set[str]:
    return {w.get("code", "") for w in record.get("warnings") or []}


def folder_bytes(folder: Path, skip: Iterable[str] = ()) -> int:
    skipped = set(skip)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name not in skipped)


# -- secrets --------------------------------------------------------------------------------------------------


def _file_has(path: Path, needle: bytes) -> bool:
    try:
        with path.open("rb") as fh:
            tail = b""
            while chunk := fh.read(1 << 20):
                if needle in tail + chunk:
                    return True
                tail = chunk[-(len(needle) - 1) :] if len(needle) > 1 else b""
    except OSError:
        return False
    return False


def marker_hits(marker: str, roots: Iterable[Path], since: float | None = None) -> list[str]:
    """Files and names below ``roots`` that hold ``marker`` (files changed before ``since`` are skipped when
    given: for shared folders such as /tmp)."""
    needle = marker.encode()
    hits = []
    for root in roots:
        if not root.exists():
            continue
        if root.is_file():
            if _file_has(root, needle):
                hits.append(str(root))
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath, name)
                if marker in name:
                    hits.append(f"{path} (its name)")
                    continue
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or (since is not None and st.st_mtime < since):
                    continue
                if _file_has(path, needle):
                    hits.append(str(path))
    return hits


def host_places(env: Mapping[str, str], sandbox: Sandbox) -> list[Path]:
    """Every place on the host where a run's secret could be left behind (searched in full)."""
    places = [sandbox.root, Path("/dev/shm"), Path(env["AGENTVM_STATE_DIR"]), Path(env["MULTIPASS_DOUBLE_DATA"])]
    if env.get("MULTIPASS_DOUBLE_TRACE"):
        places.append(Path(env["MULTIPASS_DOUBLE_TRACE"]))
    return places


#: Shared folders, searched for files changed during the test only.
SHARED_PLACES = (Path("/tmp"), Path("/var/tmp"), Path.home() / ".ansible", REPO / "runs")
