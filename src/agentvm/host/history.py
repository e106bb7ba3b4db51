"""Run history from the run folders: ``agentvm runs`` (``make runs``) and ``agentvm show`` (``make show``).
Everything shown comes from result.json files (written from hostile output): control characters are shown."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentvm import textsafe
from agentvm.host import slots
from agentvm.host.state import StateDir
from agentvm.run.request import RUN_ID_RE
from agentvm.run.summary import summary
from agentvm.settings import Settings


@dataclass
class Entry:
    run_id: str
    folder: Path
    record: dict[str, Any] | None

    @property
    def status(self) -> str:
        return str(self.record.get("status", "?")) if self.record else "running-or-lost"

    def first_line(self) -> str:
        if not self.record:
            return ""
        error = self.record.get("error") or {}
        text = self.record.get("result_text") or error.get("message") or ""
        return textsafe.one_line(str(text), 70)


def _load(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def entries(runs_dir: Path, limit: int | None = None) -> list[Entry]:
    """Run folders, newest first (run ids sort by time)."""
    if not runs_dir.is_dir():
        return []
    folders = sorted((p for p in runs_dir.iterdir() if p.is_dir() and RUN_ID_RE.match(p.name)), reverse=True)
    return [Entry(f.name, f, _load(f)) for f in folders[:limit]]


def _status(entry: Entry, settings: Settings) -> str:
    if entry.record is None:
        alive = slots.is_locked(StateDir(settings.state_dir).alive_lock(f"{settings.prefix}-run-{entry.run_id}"))
        return "running" if alive else "incomplete"
    return entry.status


def table(settings: Settings, limit: int = 20) -> str:
    rows = entries(settings.runs_dir, limit)
    if not rows:
        return f"no runs in {settings.runs_dir}"
    lines = [f"{'RUN':<24} {'STATUS':<13} {'AGENT':<9} {'SECONDS':>8}  RESULT"]
    for e in rows:
        agent = textsafe.one_line(str(((e.record or {}).get("agent") or {}).get("name", "")), 9)
        total = ((e.record or {}).get("timings") or {}).get("total")
        seconds = f"{total:8.1f}" if isinstance(total, int | float) else f"{'':>8}"
        lines.append(f"{e.run_id:<24} {_status(e, settings):<13} {agent:<9} {seconds}  {e.first_line()}")
    return "\n".join(lines)


def show(settings: Settings, run_id: str) -> str:
    """One run's summary; ``run_id`` may be a unique prefix or ``last``."""
    matches = [e for e in entries(settings.runs_dir) if run_id == "last" or e.run_id.startswith(run_id)]
    if run_id == "last":
        matches = matches[:1]
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise LookupError(
            f"{found} matching {textsafe.one_line(run_id, 40)!r} in {settings.runs_dir} (see `make runs`)"
        )
    entry = matches[0]
    record = entry.record
    if record is None:
        return f"run {entry.run_id}: no result.json yet (running, or its process was killed)\nfolder: {entry.folder}"
    clean = textsafe.clean
    timings = ", ".join(
        f"{k} {v:.1f}s" for k, v in (record.get("timings") or {}).items() if k != "total" and isinstance(v, int | float)
    )
    agent = record.get("agent") or {}
    lines = [
        f"run:      {record.get('run_id')}",
        f"agent:    {clean(str(agent.get('name', '')))} {clean(str(agent.get('version') or ''))}".rstrip(),
        f"started:  {record.get('started_at')}  finished: {record.get('finished_at')}",
        f"phases:   {timings}",
    ]
    for retry in record.get("retries") or []:
        lines.append(
            f"retry:    {retry.get('phase')} attempt {retry.get('attempt')} failed: {clean(str(retry.get('error')))}"
        )
    return "\n".join(lines) + summary(record, entry.folder)
