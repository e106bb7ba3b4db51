"""The activities: ``run_agent`` (one attempt of a run, through :func:`agentvm.api.run` in a thread) and
``alert_lost_run`` (the alert for a workflow that no attempt finished).

``run_agent`` heartbeats the run's phase as it enters each one and every few seconds in between; Temporal's
cancel (``agentvm cancel``) and the worker's shutdown set the run's ``cancel`` event, so its VM is deleted and
its record says ``interrupted``. It returns the record plus where the run folder is (``location``: host, folder)
and the attempt number.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from temporalio import activity
from temporalio.exceptions import ApplicationError

from agentvm.errors import UsageError
from agentvm.host import alerts
from agentvm.service import gitws, naming, outcome
from agentvm.service.spec import RunSpec, validate
from agentvm.settings import Settings

ALERT_VARIABLES = ("ALERT_WEBHOOK_URL", "ALERT_COMMAND", "ALERT_ATTEMPTS")


class _CancelledBeforeRun(Exception):
    """Cancelled while the workspace was being fetched: nothing was created."""


@dataclass
class _Attempt:
    workflow_id: str
    host: str
    attempt: int
    phase: str = "starting"

    def details(self) -> dict[str, Any]:
        return {"host": self.host, "attempt": self.attempt, "phase": self.phase}


class LinePrefixer:
    """A text stream that prefixes each line with the run's workflow id and attempt (the worker's log)."""

    def __init__(self, target: TextIO, prefix: str, lock: threading.Lock) -> None:
        self.target, self.prefix, self.lock, self._partial = target, prefix, lock, ""

    def write(self, text: str) -> int:
        with self.lock:
            data = self._partial + text
            *lines, self._partial = data.split("\n")
            for line in lines:
                self.target.write(f"{self.prefix} {line}\n")
            self.target.flush()
        return len(text)

    def flush(self) -> None:
        with self.lock:
            self.target.flush()


class RunActivities:
    """The activities of one host's worker. ``alert_env`` holds the alert settings (ALERT_*), which the worker
    takes out of its environment so that only the attempt that ends a workflow alerts (see :func:`take_alert_env`)."""

    def __init__(
        self,
        *,
        host: str,
        executor: Executor,
        scratch: Path,
        alert_env: Mapping[str, str],
        out: TextIO,
        runs_dir: Path,
    ) -> None:
        self.host = host
        self.executor = executor
        self.scratch = scratch
        self.alert_env = dict(alert_env)
        self.out = out
        self.runs_dir = runs_dir
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            print(f"agentvm worker {self.host}: {text}", file=self.out, flush=True)

    @activity.defn(name=naming.RUN_ACTIVITY)
    async def run_agent(self, spec: RunSpec) -> dict[str, Any]:
        info = activity.info()
        attempts = spec.attempts
        if info.retry_policy is not None and info.retry_policy.maximum_attempts > 0:
            attempts = info.retry_policy.maximum_attempts
        state = _Attempt(info.workflow_id or info.activity_id, self.host, info.attempt)
        try:
            validate(spec)
        except UsageError as exc:
            raise ApplicationError(str(exc), type=outcome.USAGE, non_retryable=True) from None
        activity.heartbeat(state.details())
        await self._announce(state)
        self.say(f"{state.workflow_id}: attempt {state.attempt} of {attempts} started")
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        changed = asyncio.Event()

        def on_phase(phase: str) -> None:
            state.phase = phase
            loop.call_soon_threadsafe(changed.set)

        work = loop.run_in_executor(self.executor, self._attempt, spec, state, cancel, on_phase)
        shutdown = False
        try:
            await self._beat_until(work, state, changed, info.heartbeat_timeout)
        except asyncio.CancelledError:
            shutdown = _worker_shutdown()
            why = "the worker is shutting down" if shutdown else "the workflow was cancelled"
            self.say(f"{state.workflow_id}: {why}: interrupting the run (its VM is deleted)")
            cancel.set()
            await self._beat_until(work, state, changed, info.heartbeat_timeout)
        return await self._conclude(work, spec, state, attempts, shutdown, cancel.is_set())

    async def _conclude(
        self,
        work: asyncio.Future[Any],
        spec: RunSpec,
        state: _Attempt,
        attempts: int,
        shutdown: bool,
        cancelled: bool,
    ) -> dict[str, Any]:
        try:
            result = work.result()
        except UsageError as exc:
            raise ApplicationError(str(exc), type=outcome.USAGE, non_retryable=True) from None
        except gitws.FetchFailed as exc:
            raise ApplicationError(str(exc), type=outcome.WORKSPACE) from None
        except _CancelledBeforeRun:
            if shutdown:
                raise ApplicationError("the worker shut down before the run started", type=outcome.SHUTDOWN) from None
            raise asyncio.CancelledError() from None
        except Exception as exc:
            from agentvm.errors import QueueTimeout

            if isinstance(exc, QueueTimeout):
                raise ApplicationError(str(exc), type=outcome.QUEUE) from None
            raise
        record = self._augment(result.record, result.run_dir, spec, state)
        decision = outcome.decide(record["status"], state.attempt, attempts, shutdown)
        summary = {"run_id": record["run_id"], "host": self.host, "folder": str(result.run_dir)}
        self.say(f"{state.workflow_id}: attempt {state.attempt} ended {record['status']} ({result.run_dir})")
        if decision.retry:
            error = (record.get("error") or {}).get("message") or record["status"]
            raise ApplicationError(f"{record['status']} on {self.host}: {error}", summary, type=decision.error_type)
        if decision.alert:
            await self._alert(record, result.run_dir)
        if cancelled and not shutdown and record["status"] != "interrupted":
            self.say(f"{state.workflow_id}: cancelled, but the run had already ended {record['status']}")
        return record

    def _attempt(self, spec: RunSpec, state: _Attempt, cancel: threading.Event, on_phase: Callable[[str], None]) -> Any:
        """In a worker thread: fetch the git workspace (if any), then the run itself."""
        from agentvm import api

        scratch: Path | None = None
        try:
            workspace = spec.workspace_path
            if spec.workspace_git:
                on_phase("workspace")
                scratch = gitws.fetch(spec.workspace_git, spec.workspace_ref, self.scratch)
                workspace = str(scratch)
            if cancel.is_set():
                raise _CancelledBeforeRun()
            options = api.RunOptions(
                prompt=spec.prompt,
                agent=spec.agent,
                agent_command=spec.agent_command,
                agent_credentials=spec.agent_credentials,
                model=spec.model,
                max_turns=spec.max_turns,
                timeout=spec.timeout,
                workspace=workspace,
                keep=spec.keep,
                labels=dict(spec.labels),
                trigger=spec.trigger,
                attempt=state.attempt,
            )
            out = LinePrefixer(self.out, f"[{state.workflow_id} #{state.attempt}]", self._lock)
            return api.run(options, None, cancel=cancel, on_phase=on_phase, out=out)  # type: ignore[arg-type]
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    def _augment(self, record: dict[str, Any], run_dir: Path, spec: RunSpec, state: _Attempt) -> dict[str, Any]:
        """Where the run folder is, which attempt this was, and the caller's labels and trigger."""
        record = dict(record)
        record.setdefault("location", {"host": self.host, "folder": str(run_dir)})
        record.setdefault("attempt", state.attempt)
        if spec.labels:
            record.setdefault("labels", dict(spec.labels))
        if spec.trigger:
            record.setdefault("trigger", dict(spec.trigger))
        if spec.workspace_git and isinstance(record.get("workspace"), dict):
            record["workspace"] = dict(
                record["workspace"], source=f"{spec.workspace_git}#{spec.workspace_ref or 'HEAD'}"
            )
        return record

    async def _beat_until(
        self, work: asyncio.Future[Any], state: _Attempt, changed: asyncio.Event, timeout: Any
    ) -> None:
        """Heartbeat the phase when it changes and every few seconds, until the work is done."""
        every = 2.0 if timeout is None else max(0.5, min(2.0, timeout.total_seconds() / 3))
        while not work.done():
            waiter = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({work, waiter}, timeout=every, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            changed.clear()
            activity.heartbeat(state.details())

    async def _announce(self, state: _Attempt) -> None:
        """Tell the workflow which host runs this attempt (search attribute AgentvmHost). Best effort."""
        with contextlib.suppress(Exception):
            handle = activity.client().get_workflow_handle(state.workflow_id)
            await asyncio.wait_for(
                handle.signal(naming.PROGRESS_SIGNAL, {"host": state.host, "attempt": state.attempt}), 10
            )

    async def _alert(self, record: dict[str, Any], run_dir: Path) -> None:
        loop = asyncio.get_running_loop()
        problems = await loop.run_in_executor(self.executor, send_alert, record, run_dir, self.alert_env)
        for problem in problems:
            self.say(f"warning: {problem}")

    @activity.defn(name=naming.ALERT_ACTIVITY)
    async def alert_lost_run(self, data: dict[str, Any]) -> None:
        """The alert for a workflow none of whose attempts produced a record (run as a local activity)."""
        record = {
            "run_id": str(data.get("workflow_id")),
            "status": "infra_failed",
            "exit_code": outcome.LOST_EXIT,
            "error": {
                "phase": "service",
                "message": str(data.get("message"))[:500],
                "hint": "every attempt's worker died or shut down under it: see the workers' logs, then resubmit",
            },
        }
        await self._alert(record, self.runs_dir)


def _worker_shutdown() -> bool:
    details = activity.cancellation_details()
    return bool(details is not None and details.worker_shutdown) or activity.is_worker_shutdown()


def send_alert(record: dict[str, Any], run_dir: Path, alert_env: dict[str, str]) -> list[str]:
    """The alert of a finished workflow, with the alert settings taken out of the worker's environment."""
    settings = Settings.load({**os.environ, **alert_env})
    return alerts.send(record, run_dir, settings.alert_webhook_url, settings.alert_command, settings.alert_attempts)


def take_alert_env(environ: Any = os.environ) -> dict[str, str]:
    """Remove the alert settings from this process's environment and return them.

    ``agentvm.api.run`` alerts with the settings it reads from ``os.environ``; a retried attempt must not
    alert, so the worker sends the alert itself, once, for the attempt whose record ends the workflow.
    """
    return {key: environ.pop(key) for key in ALERT_VARIABLES if key in environ}
