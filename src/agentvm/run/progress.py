"""Phases, timings, retries and the first failure of a run, from ansible-runner's events; the terminal lines.

The playbook names the tasks of each phase ``[phase] …``; a phase starts with its first task and ends when the
next phase starts. Every line printed goes through ``textsafe`` (control characters shown, secrets redacted).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from agentvm import textsafe

PHASES = ("clone", "start", "ready", "isolate", "upload", "agent", "fetch", "teardown")
HEARTBEAT = 30.0


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def phase_of(task: str) -> str | None:
    """``"[agent] Run the agent"`` -> ``"agent"``."""
    if task.startswith("[") and "]" in task:
        name = task[1 : task.index("]")]
        return name if name in PHASES else None
    return None


class Progress:
    """Follows the run: ``event()`` is ansible-runner's event handler; ``say()`` prints one line."""

    def __init__(
        self,
        out: TextIO,
        started: float,
        redactor: textsafe.Redactor | None = None,
        on_phase: Callable[[str], None] | None = None,
        heartbeat: float = HEARTBEAT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.started = started
        self.redactor = redactor or textsafe.Redactor({})
        self.on_phase = on_phase
        self.clock = clock
        self.phase: str | None = None
        self.phase_started: dict[str, float] = {}
        self.phase_ended: dict[str, float] = {}
        self.failure: dict[str, Any] | None = None
        self.failed_phase: str | None = None
        self.retries: list[dict[str, Any]] = []
        self.listeners: list[Callable[[str | None, str], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        if heartbeat > 0:
            self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat,), daemon=True)
            self._beat.start()

    def say(self, text: str) -> None:
        line = textsafe.clean(self.redactor.text(text))
        with self._lock, contextlib.suppress(OSError, ValueError):
            print(f"[{self.clock() - self.started:7.1f}s] {line}", file=self.out, flush=True)

    def enter(self, phase: str) -> None:
        now = self.clock()
        if phase == self.phase:
            return
        previous = self.phase
        if previous:
            self.phase_ended[previous] = now
        self.phase = phase
        self.phase_started.setdefault(phase, now)
        self.say(f"{phase} ...")
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                listener(previous, phase)
        if self.on_phase is not None:
            with contextlib.suppress(Exception):
                self.on_phase(phase)

    def event(self, data: dict[str, Any]) -> bool:
        """ansible-runner's event handler (returns True: keep the event)."""
        kind = data.get("event", "")
        event_data = data.get("event_data") or {}
        task = str(event_data.get("task") or "")
        if kind in ("playbook_on_task_start", "runner_on_start"):
            phase = phase_of(task)
            if phase:
                self.enter(phase)
        elif kind == "runner_retry":
            self._retry(event_data.get("res") or {})
        elif (kind == "runner_on_failed" and not event_data.get("ignore_errors") and self.failure is None) or (
            kind == "runner_on_unreachable" and self.failure is None
        ):
            self.failure = event_data.get("res") or {}
            self.failed_phase = self.phase
        return True

    def _retry(self, res: dict[str, Any]) -> None:
        """A clone/start attempt failed with a transient error and Ansible will try again (other phases'
        `until` loops, such as waiting for the isolation, are not failures)."""
        if self.phase not in (None, "clone", "start"):
            return
        message = textsafe.one_line(str(res.get("msg") or res.get("stderr") or "failed"))
        attempt = _as_int(res.get("attempts"), len(self.retries) + 1)
        total = _as_int(res.get("retries"), 0)
        phase = self.phase or "clone"
        self.retries.append(
            {"phase": phase, "attempt": attempt, "attempts_allowed": total, "error": message, "at": now_iso()}
        )
        self.say(f"{phase} attempt {attempt} of {total} failed ({message}); retrying")

    def failure_message(self) -> str:
        res = self.failure or {}
        text = res.get("msg") or res.get("stderr") or ("a task with hidden output failed" if "censored" in res else "")
        return textsafe.clean(self.redactor.text(str(text or "the playbook failed")))

    def close(self) -> None:
        if self.phase:
            self.phase_ended.setdefault(self.phase, self.clock())
        self._stop.set()

    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every):
            if self.phase == "agent":
                self.say("agent still working ...")

    def seconds(self, phase: str) -> float | None:
        if phase not in self.phase_started:
            return None
        return self.phase_ended.get(phase, self.clock()) - self.phase_started[phase]

    def timings(self) -> dict[str, float]:
        return {p: round(max(0.0, self.seconds(p) or 0.0), 3) for p in PHASES if p in self.phase_started}


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
