"""``agentvm mcp`` without the service: each run is an ``agentvm run`` child process in the background.

The child gets a run id chosen here (``AGENTVM_RUN_ID``), its options as ``--flag=value`` arguments and the
prompt on its stdin (never in argv, which ``ps`` shows). It runs in a session of its own, so it outlives this
server; its folder ``runs/<run-id>/`` (``result.json`` at the end) is what every status comes from. What the
child printed goes to ``<state>/mcp/<run-id>/run.log`` (mode 0600 in a 0700 folder): the phase and, when the
run was refused before it began, the reason. Cancel sends SIGINT to the child's process group: the run's own
teardown deletes the VM and writes an ``interrupted`` record.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from agentvm.errors import UsageError
from agentvm.host import slots
from agentvm.host.state import StateDir
from agentvm.options import RunInput, from_env
from agentvm.run.request import RUN_ID_RE, build_request, new_run_id
from agentvm.service import gitws, mcpread, naming
from agentvm.settings import Settings
from agentvm.vault import load_vault

_CHILD_DROPS = ("PROMPT", "PROMPT_FILE", "AGENTVM_RUN_ID", "AGENTVM_TRIGGER")


@dataclass
class Child:
    run_id: str
    proc: subprocess.Popen[bytes]
    scratch: Path
    cleanup: list[Path] = field(default_factory=list)


class LocalBackend:
    name = "local"

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = {k: v for k, v in env.items() if k not in _CHILD_DROPS}
        self.settings = Settings.load(self.env)
        self.children: dict[str, Child] = {}

    # -- starting ------------------------------------------------------------------------------------------

    def _input(self, prompt: bytes, options: Mapping[str, Any], workspace: str | None) -> RunInput:
        given = RunInput(
            prompt=prompt,
            agent=options.get("agent"),
            model=options.get("model"),
            timeout=options.get("timeout"),
            workspace=workspace,
            trigger={"kind": "mcp", "name": None, "id": None},
        )
        return given.over(from_env(self.settings.env))

    def _check(self, prompt: bytes, options: Mapping[str, Any], workspace: str | None) -> None:
        """Everything `agentvm run` checks before it creates anything (UsageError): the same function."""
        inp = self._input(prompt, options, workspace)
        build_request(self.settings, inp, stdin=None, vault=load_vault(self.settings))

    def _argv(self, options: Mapping[str, Any], workspace: str | None) -> list[str]:
        argv = [sys.executable, "-m", "agentvm.cli", "run"]
        for name in ("agent", "model", "timeout"):
            if options.get(name) is not None:
                argv.append(f"--{name}={options[name]}")
        if workspace:
            argv.append(f"--workspace={workspace}")
        return [*argv, "-"]

    def _fresh_id(self) -> str:
        while True:
            run_id = new_run_id()
            if not (self.settings.runs_dir / run_id).exists() and not self._scratch(run_id).exists():
                return run_id

    def _scratch(self, run_id: str) -> Path:
        return self.settings.state_dir / "mcp" / run_id

    def _workspace(self, options: Mapping[str, Any], scratch: Path) -> tuple[str | None, list[Path]]:
        raw = options.get("workspace")
        if not raw or "://" not in raw:
            return _host_path(raw), []
        fetched = gitws.fetch(raw, options.get("ref"), scratch, self.settings.env)
        return str(fetched), [fetched]

    async def start(self, prompt: bytes, options: Mapping[str, Any]) -> dict[str, Any]:
        raw = options.get("workspace")
        if raw and "://" in raw:
            from agentvm.service.spec import check_git_url, check_ref

            check_git_url(raw)
            if options.get("ref"):
                check_ref(options["ref"])
            await anyio.to_thread.run_sync(self._check, prompt, options, None)
        else:
            await anyio.to_thread.run_sync(self._check, prompt, options, _host_path(raw))
        run_id = self._fresh_id()
        scratch = self._scratch(run_id)
        scratch.mkdir(parents=True, mode=0o700)
        try:
            workspace, cleanup = await anyio.to_thread.run_sync(self._workspace, options, scratch)
        except (UsageError, gitws.FetchFailed):
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        self.children[run_id] = self._spawn(run_id, prompt, self._argv(options, workspace), scratch, cleanup)
        return {"run_id": run_id, "backend": self.name, "status": naming.QUEUED}

    def _spawn(self, run_id: str, prompt: bytes, argv: list[str], scratch: Path, cleanup: list[Path]) -> Child:
        env = {**self.env, "AGENTVM_RUN_ID": run_id, "AGENTVM_TRIGGER": "mcp"}
        log_fd = os.open(scratch / "run.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                cwd=scratch,
            )
        finally:
            os.close(log_fd)
        (scratch / "pid").write_text(str(proc.pid))
        threading.Thread(target=_feed, args=(proc, prompt), daemon=True).start()
        return Child(run_id, proc, scratch, cleanup)

    # -- reading -------------------------------------------------------------------------------------------

    def _alive(self, run_id: str) -> bool | None:
        """Whether the run's process is alive: None when this server did not start it."""
        child = self.children.get(run_id)
        if child is None:
            return None
        alive = child.proc.poll() is None
        if not alive:
            for path in child.cleanup:
                shutil.rmtree(path, ignore_errors=True)
            child.cleanup.clear()
        return alive

    def _elsewhere(self, run_id: str) -> bool:
        """Whether a run this server did not start (another `agentvm mcp` did) is alive: its VM's alive lock,
        or the child whose pid that server wrote (checked to be the run's own process where /proc tells)."""
        lock = StateDir(self.settings.state_dir).alive_lock(f"{self.settings.prefix}-run-{run_id}")
        if slots.is_locked(lock):
            return True
        try:
            pid = int((self._scratch(run_id) / "pid").read_text()[:20])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        environ = Path(f"/proc/{pid}/environ")
        if not environ.parent.exists():
            return True
        with contextlib.suppress(OSError):
            return f"AGENTVM_RUN_ID={run_id}".encode() in environ.read_bytes().split(b"\0")
        return False

    def status(self, run_id: str) -> dict[str, Any]:
        folder = self.settings.runs_dir / run_id
        scratch = self._scratch(run_id)
        record = mcpread.load_record(folder)
        base: dict[str, Any] = {"run_id": run_id, "backend": self.name, "phase": None, "exit_code": None}
        if record is not None:
            keys = ("status", "exit_code", "started_at", "finished_at")
            return {**base, **{k: record.get(k) for k in keys}, "phase": "done"}
        alive = self._alive(run_id)
        if alive is None:
            alive = self._elsewhere(run_id)
            if not alive and not folder.is_dir() and not scratch.is_dir():
                raise UsageError(f"no run {run_id} here (see list_runs)")
        phase = mcpread.last_phase(scratch / "run.log")
        if alive:
            return {**base, "status": naming.RUNNING if folder.is_dir() else naming.QUEUED, "phase": phase}
        child = self.children.get(run_id)
        code = child.proc.returncode if child is not None else None
        message = mcpread.last_error(scratch / "run.log")
        status = naming.REJECTED if code in (2, 5) and not folder.is_dir() else naming.LOST
        return {**base, "status": status, "exit_code": code, "phase": phase, "message": message}

    def result(self, run_id: str) -> dict[str, Any]:
        state = self.status(run_id)
        folder = self.settings.runs_dir / run_id
        record = mcpread.load_record(folder)
        if record is None:
            return {**state, "result_text": None, "patch": None, "outputs": []}
        return {"run_id": run_id, "backend": self.name, **mcpread.folder_result(folder, record)}

    async def wait(self, run_id: str, poll: float = 1.0) -> None:
        while self.status(run_id)["status"] in (naming.QUEUED, naming.RUNNING):
            await anyio.sleep(poll)

    def cancel(self, run_id: str) -> dict[str, Any]:
        if not self._alive(run_id):
            state = self.status(run_id)
            raise UsageError(f"run {run_id} is {state['status']}: this server has no running child for it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.children[run_id].proc.pid, signal.SIGINT)
        return {"run_id": run_id, "backend": self.name, "cancel_requested": True}

    def list_runs(self, limit: int) -> list[dict[str, Any]]:
        names = set(self.children)
        for parent in (self.settings.runs_dir, self.settings.state_dir / "mcp"):
            with contextlib.suppress(OSError):
                names.update(p.name for p in parent.iterdir() if RUN_ID_RE.fullmatch(p.name))
        rows = []
        for run_id in sorted(names, reverse=True)[:limit]:
            with contextlib.suppress(UsageError):
                rows.append(self.status(run_id))
        return rows

    async def close(self) -> None:
        """The children run on (their records land in the runs folder); the fetched clones of those that ended
        are removed (a running child's stays: it is that run's workspace upload source)."""
        for run_id in list(self.children):
            self._alive(run_id)


def _host_path(raw: str | None) -> str | None:
    return str(Path(raw).expanduser().resolve()) if raw else None


def _feed(proc: subprocess.Popen[bytes], prompt: bytes) -> None:
    with contextlib.suppress(OSError):
        assert proc.stdin is not None
        proc.stdin.write(prompt)
        proc.stdin.close()
