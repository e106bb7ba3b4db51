"""One run, end to end: the playbook through ansible-runner, progress, teardown that always happens,
and the result folder."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from agentvm.errors import EXIT_CODES, RunError, Status
from agentvm.request import REPO, RunRequest
from agentvm.results import PARSERS, prompt_digest, validate
from agentvm.workspace import pack

PLAYBOOK = REPO / "playbooks" / "run.yml"
PHASES = ("clone", "start", "ready", "upload", "agent", "fetch", "teardown")

HINTS = {
    "clone": "check that the golden VM exists and is Stopped (`multipass info {golden}`); "
    "rebuild it with `make golden`",
    "start": "the clone did not start: see diagnostics/ and check Multipass (`multipass list`)",
    "ready": "cloud-init did not finish in the clone: see diagnostics/cloud-init*.log",
    "upload": "copying the prompt, workspace or credentials into the VM failed: see ansible.log",
    "agent": "see stderr.log and ansible.log",
    "fetch": "fetching the results failed: see ansible.log",
    "teardown": "delete the instance by hand: `multipass delete --purge {instance}`, or run `make clean`",
}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _secure_tmp() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def describe_event(event: dict[str, Any]) -> str | None:
    """One short line for a streamed agent event (Claude Code stream-json, codex/opencode JSONL)."""
    kind = event.get("type")
    if kind == "assistant":
        parts = []
        for block in (event.get("message") or {}).get("content") or []:
            if block.get("type") == "text" and block.get("text"):
                parts.append("says: " + block["text"].strip().splitlines()[0][:100])
            elif block.get("type") == "tool_use":
                parts.append(f"uses {block.get('name')}")
        return "; ".join(parts) or None
    if kind == "system" and event.get("subtype") == "init":
        return f"started (model {event.get('model')})"
    if kind == "result":
        return f"finished: {event.get('subtype')}"
    if kind in ("item.completed", "tool_use", "text", "error", "turn.failed"):
        return kind
    return None


class AgentStream:
    """Follows the agent's stdout in the VM (``multipass exec … tail -F``) and prints its events."""

    def __init__(self, req: RunRequest, say: Any) -> None:
        path = f"/home/ubuntu/.agentvm/{req.run_id}/stdout.log"
        self.say = say
        self.proc = subprocess.Popen(
            [req.multipass_bin, "exec", "-n", req.instance, "--", "tail", "-n", "+1", "-F", path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError, AttributeError):
                text = describe_event(json.loads(line))
                if text:
                    self.say(f"  agent {text}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class Progress:
    """Phase and elapsed time on the terminal, from ansible-runner's events."""

    def __init__(self, out: TextIO, started: float, req: RunRequest | None = None, on_phase: Any = None) -> None:
        self.req = req
        self.on_phase = on_phase
        self.stream: AgentStream | None = None
        self.out = out
        self.started = started
        self.phase: str | None = None
        self.phase_started: dict[str, float] = {}
        self.phase_ended: dict[str, float] = {}
        self.failure: dict[str, Any] | None = None
        self.failed_phase: str | None = None
        self.retries: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {text}", file=self.out, flush=True)

    def enter(self, phase: str) -> None:
        now = time.monotonic()
        if phase == self.phase:
            return
        if self.phase:
            self.phase_ended[self.phase] = now
        if self.stream is not None:
            self.stream.stop()
            self.stream = None
        self.phase = phase
        self.phase_started.setdefault(phase, now)
        self.say(f"{phase} ...")
        if self.on_phase is not None:
            with contextlib.suppress(Exception):
                self.on_phase(phase)
        if phase == "agent" and self.req is not None and self.req.profile.output != "text":
            self.stream = AgentStream(self.req, self.say)

    def event(self, data: dict[str, Any]) -> bool:
        kind = data.get("event", "")
        event_data = data.get("event_data") or {}
        task = event_data.get("task", "") or ""
        if kind in ("playbook_on_task_start", "runner_on_start") and task.startswith("["):
            phase = task[1 : task.index("]")] if "]" in task else ""
            if phase in PHASES:
                self.enter(phase)
        if kind == "runner_retry":
            self._retry(event_data.get("res") or {})
        failed = kind == "runner_on_failed" and not event_data.get("ignore_errors")
        if failed and self.failure is None:
            self.failure = event_data.get("res") or {}
            self.failed_phase = self.phase
        return True

    def _retry(self, res: dict[str, Any]) -> None:
        """A clone/start attempt failed with a transient error and Ansible will try again."""
        message = str(res.get("msg") or res.get("stderr") or "failed").strip().splitlines()[0]
        attempt, total = int(res.get("attempts") or len(self.retries) + 1), int(res.get("retries") or 0)
        self.retries.append(
            {
                "phase": self.phase or "clone",
                "attempt": attempt,
                "attempts_allowed": total,
                "error": message,
                "at": _now(),
            }
        )
        self.say(f"{self.phase} attempt {attempt} of {total} failed ({message}); retrying")

    def close(self) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream = None
        if self.phase:
            self.phase_ended.setdefault(self.phase, time.monotonic())
        self._stop.set()

    def _heartbeat(self) -> None:
        while not self._stop.wait(30):
            if self.phase == "agent":
                self.say("agent still working ...")

    def timings(self) -> dict[str, float]:
        return {
            p: round(self.phase_ended.get(p, time.monotonic()) - self.phase_started[p], 3)
            for p in PHASES
            if p in self.phase_started
        }


@contextlib.contextmanager
def _signals(flag: threading.Event) -> Iterator[None]:
    def handler(signum: int, _frame: Any) -> None:
        flag.set()

    if threading.current_thread() is not threading.main_thread():
        yield  # a worker thread (the service): the caller cancels through the event
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _multipass(req: RunRequest, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [req.multipass_bin, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def ensure_deleted(req: RunRequest) -> str | None:
    """Delete and purge the run's instance if it exists; return an error text when that failed."""
    info = _multipass(req, "info", req.instance, "--format", "json", "--no-runtime-information")
    if info.returncode != 0 and "does not exist" in info.stderr:
        return None
    proc = _multipass(req, "delete", "--purge", req.instance)
    if proc.returncode != 0 and "does not exist" not in proc.stderr:
        return proc.stderr.strip() or f"multipass delete exited {proc.returncode}"
    return None


def _runner_env(req: RunRequest) -> dict[str, str]:
    env = {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "MULTIPASS_BIN": req.multipass_bin,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    for key in ("MULTIPASS_DOUBLE_DATA", "MULTIPASS_DOUBLE_IMAGES", "MULTIPASS_DOUBLE_TRACE", "HOME"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def _extravars(req: RunRequest, secrets_file: Path | None, archive: Path | None) -> dict[str, Any]:
    profile = req.profile
    command = profile.command(
        prompt_file=f"/home/ubuntu/.agentvm/{req.run_id}/prompt.txt",
        prompt=req.prompt,
        model=req.model,
        max_turns=req.max_turns,
    )
    return {
        "agentvm_run_id": req.run_id,
        "agentvm_instance": req.instance,
        "agentvm_golden": req.golden,
        "agentvm_run_dir": str(req.run_dir),
        "agentvm_timeout": req.timeout,
        "agentvm_keep": req.keep,
        "agentvm_retries": req.retries,
        "agentvm_retry_delay": req.retry_delay,
        "agentvm_secrets_file": str(secrets_file) if secrets_file else "",
        "agentvm_workspace_archive": str(archive) if archive else "",
        "agentvm_agent": {
            "name": profile.name,
            "command": command,
            "prompt": profile.prompt,
            "env": {**profile.env, **req.passthrough},
            "version_command": [profile.binary, "--version"] if profile.binary else [],
        },
    }


def _run_playbook(
    req: RunRequest, private: Path, extravars: dict[str, Any], progress: Progress, stop: threading.Event
) -> Any:
    import ansible_runner

    private.mkdir(mode=0o700)
    return ansible_runner.run(
        private_data_dir=str(private),
        playbook=str(PLAYBOOK),
        extravars=extravars,
        envvars=_runner_env(req),
        event_handler=progress.event,
        cancel_callback=stop.is_set,
        quiet=True,
        timeout=req.timeout + 1800,
    )


def _safe_extract(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")


def _collect_files(req: RunRequest) -> dict[str, Any]:
    """Unpack what was fetched from the VM into the documented layout; return the small summary files."""
    run_dir = req.run_dir
    for scratch in ("bundle.tar", "run.json"):
        (run_dir / scratch).unlink(missing_ok=True)
    if (run_dir / "diagnostics.tar").exists():
        _safe_extract(run_dir / "diagnostics.tar", run_dir / "diagnostics")
        (run_dir / "diagnostics.tar").unlink()
    staged = run_dir / "vm"
    if (run_dir / "results.tar").exists():
        _safe_extract(run_dir / "results.tar", staged)
        (run_dir / "results.tar").unlink()
    moved: dict[str, Any] = {}
    for name in ("stdout.log", "stderr.log", "workspace.patch", "workspace-commits.mbox"):
        if (staged / name).exists():
            os.replace(staged / name, run_dir / name)
    if (staged / "output.tar").exists():
        _safe_extract(staged / "output.tar", run_dir / "output")
    for name in ("result.json", "agent_version", "commits"):
        path = staged / name
        if path.exists():
            moved[name] = path.read_text(errors="replace").strip()
    shutil.rmtree(staged, ignore_errors=True)
    return moved


def _outcome(req: RunRequest, fetched: dict[str, Any], parsed: dict[str, Any]) -> tuple[Status, dict[str, Any] | None]:
    summary = json.loads(fetched["result.json"])
    if summary.get("timed_out"):
        return Status.TIMED_OUT, {
            "phase": "agent",
            "message": f"the agent did not finish within TIMEOUT={req.timeout} s and was stopped",
            "hint": "raise TIMEOUT or narrow the prompt; what it wrote so far is in stdout.log and output/",
        }
    if summary.get("exit_code") != 0 or parsed.get("is_error"):
        return Status.AGENT_FAILED, {
            "phase": "agent",
            "message": f"the agent exited with code {summary.get('exit_code')}"
            + (" and reported an error" if parsed.get("is_error") else ""),
            "hint": "see stderr.log and agent-output.json",
        }
    return Status.SUCCEEDED, None


def _failure(req: RunRequest, progress: Progress, interrupted: bool) -> RunError:
    phase = progress.failed_phase or progress.phase or "clone"
    if interrupted:
        return RunError(Status.INTERRUPTED, phase, "the run was interrupted", "nothing to do: the VM was deleted")
    res = progress.failure or {}
    message = str(res.get("msg") or res.get("stderr") or "the playbook failed").strip()
    if phase == "agent" and "timed out" in message.lower():
        return RunError(Status.TIMED_OUT, phase, message, "raise TIMEOUT or narrow the prompt")
    hint = HINTS.get(phase, "see ansible.log").format(golden=req.golden, instance=req.instance)
    return RunError(Status.INFRA_FAILED, phase, f"{phase} failed: {message}", hint)


class Run:
    def __init__(
        self,
        req: RunRequest,
        out: TextIO = sys.stderr,
        cancel: threading.Event | None = None,
        on_phase: Any = None,
    ) -> None:
        self.req = req
        self.out = out
        self.cancel = cancel or threading.Event()
        self.on_phase = on_phase

    def execute(self) -> tuple[dict[str, Any], int]:
        req = self.req
        started_at, t0 = _now(), time.monotonic()
        req.run_dir.mkdir(parents=True, exist_ok=False, mode=0o700)
        (req.run_dir / "prompt.txt").write_bytes(req.prompt)
        progress = Progress(self.out, t0, req, on_phase=self.on_phase)
        progress.say(f"run {req.run_id}: agent {req.profile.name} in {req.instance} (results: {req.run_dir})")
        stop = self.cancel
        tmp = Path(tempfile.mkdtemp(prefix="agentvm-", dir=_secure_tmp()))
        runner_result: Any = None
        workspace: dict[str, Any] | None = None
        teardown_error: str | None = None
        teardown_seconds = 0.0
        try:
            with _signals(stop):
                secrets_file = None
                if req.secrets:
                    secrets_file = tmp / "secrets.json"
                    fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w") as fh:
                        json.dump(req.secrets, fh)
                archive = None
                if req.workspace:
                    packed = pack(req.workspace, tmp / "workspace.tar.gz")
                    archive = packed.archive
                    workspace = {"source": str(req.workspace), "files": packed.files, "bytes": packed.bytes}
                extravars = _extravars(req, secrets_file, archive)
                runner_result = _run_playbook(req, tmp / "runner", extravars, progress, stop)
        except Exception as exc:
            progress.failure = {"msg": f"{type(exc).__name__}: {exc}"}
            progress.failed_phase = progress.phase or "clone"
        finally:
            progress.close()
            if not req.keep:
                t_down = time.monotonic()
                teardown_error = ensure_deleted(req)
                teardown_seconds = time.monotonic() - t_down
            self._save_ansible_log(runner_result)
            shutil.rmtree(tmp, ignore_errors=True)
        return self._finish(
            progress, runner_result, stop.is_set(), workspace, started_at, t0, teardown_error, teardown_seconds
        )

    def _save_ansible_log(self, runner_result: Any) -> None:
        if runner_result is None:
            return
        with contextlib.suppress(Exception):
            stdout = runner_result.stdout.read()
            (self.req.run_dir / "ansible.log").write_text(stdout)

    def _finish(
        self,
        progress: Progress,
        runner_result: Any,
        interrupted: bool,
        workspace: dict[str, Any] | None,
        started_at: str,
        t0: float,
        teardown_error: str | None,
        teardown_seconds: float,
    ) -> tuple[dict[str, Any], int]:
        req = self.req
        fetched = _collect_files(req)
        parsed = (
            PARSERS[req.profile.output]((req.run_dir / "stdout.log").read_text(errors="replace"))
            if (req.run_dir / "stdout.log").exists()
            else {"result_text": None}
        )
        if parsed.get("raw") is not None:
            (req.run_dir / "agent-output.json").write_text(
                json.dumps(parsed["raw"], indent=2, ensure_ascii=False) + "\n"
            )
        ok = runner_result is not None and getattr(runner_result, "status", "") == "successful" and not interrupted
        status, error = Status.SUCCEEDED, None
        if ok and "result.json" in fetched:
            status, error = _outcome(req, fetched, parsed)
        else:
            failure = _failure(req, progress, interrupted)
            status, error = failure.status, {"phase": failure.phase, "message": failure.message, "hint": failure.hint}
        if teardown_error:
            status = Status.INFRA_FAILED if status == Status.SUCCEEDED else status
            error = error or {
                "phase": "teardown",
                "message": teardown_error,
                "hint": HINTS["teardown"].format(instance=req.instance, golden=req.golden),
            }
        timings = progress.timings()
        timings["teardown"] = round(timings.get("teardown", 0.0) + teardown_seconds, 3)
        timings["total"] = round(time.monotonic() - t0, 3)
        agent_summary = json.loads(fetched["result.json"]) if "result.json" in fetched else {}
        if workspace is not None:
            workspace["patch"] = "workspace.patch" if (req.run_dir / "workspace.patch").exists() else None
            workspace["commits"] = int(fetched.get("commits") or 0)
        record = {
            "schema_version": 1,
            "run_id": req.run_id,
            "status": str(status),
            "exit_code": EXIT_CODES[status],
            "agent": {
                "name": req.profile.name,
                "version": (fetched.get("agent_version") or "").splitlines()[0]
                if fetched.get("agent_version")
                else None,
                "model": parsed.get("model") or req.model,
                "exit_code": agent_summary.get("exit_code"),
            },
            "prompt": prompt_digest(req.prompt),
            "result_text": parsed.get("result_text"),
            "usage": parsed.get("usage"),
            "cost": parsed.get("cost"),
            "timings": timings,
            "instance": {
                "name": req.instance,
                "golden": req.golden,
                "golden_manifest_id": _manifest_id(),
                "kept": req.keep,
            },
            "workspace": workspace,
            "retries": progress.retries,
            "started_at": started_at,
            "finished_at": _now(),
            "error": error,
        }
        validate(record)
        (req.run_dir / "result.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        return record, EXIT_CODES[status]


def _manifest_id() -> str | None:
    manifest = Path(os.environ.get("AGENTVM_GOLDEN_DIR") or REPO / "golden") / "manifest.json"
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    value = data.get("build_id") or data.get("inputs_sha256")
    return str(value) if value else None
