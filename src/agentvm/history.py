"""Run history from the run folders: ``agentvm runs`` (``make runs``) and ``agentvm show`` (``make show``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentvm import slots


@dataclass
class Entry:
    run_id: str
    folder: Path
    record: dict[str, Any] | None

    @property
    def status(self) -> str:
        return self.record["status"] if self.record else "running-or-lost"

    def first_line(self) -> str:
        if not self.record:
            return ""
        error = self.record.get("error") or {}
        text = self.record.get("result_text") or error.get("message") or ""
        lines = text.strip().splitlines()
        return lines[0] if lines else ""


def _load(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None


def entries(runs_dir: Path, limit: int | None = None) -> list[Entry]:
    """Run folders, newest first (run ids sort by time)."""
    if not runs_dir.is_dir():
        return []
    folders = sorted((p for p in runs_dir.iterdir() if p.is_dir() and p.name[:1].isdigit()), reverse=True)
    return [Entry(f.name, f, _load(f)) for f in folders[:limit]]


def _status(entry: Entry, state_dir: Path | None, prefix: str) -> str:
    if entry.record is None and state_dir is not None:
        alive = slots.is_locked(slots.alive_lock(state_dir, f"{prefix}-run-{entry.run_id}"))
        return "running" if alive else "incomplete"
    return entry.status


def table(runs_dir: Path, limit: int = 20, state_dir: Path | None = None, prefix: str = "agentvm") -> str:
    rows = entries(runs_dir, limit)
    if not rows:
        return f"no runs in {runs_dir}"
    lines = [f"{'RUN':<24} {'STATUS':<13} {'AGENT':<9} {'SECONDS':>8}  RESULT"]
    for e in rows:
        agent = (e.record or {}).get("agent", {}).get("name", "")
        total = (e.record or {}).get("timings", {}).get("total")
        seconds = f"{total:8.1f}" if isinstance(total, int | float) else f"{'':>8}"
        lines.append(f"{e.run_id:<24} {_status(e, state_dir, prefix):<13} {agent:<9} {seconds}  {e.first_line()[:70]}")
    return "\n".join(lines)


def show(runs_dir: Path, run_id: str) -> str:
    """One run's summary; ``run_id`` may be a unique prefix or ``last``."""
    matches = [e for e in entries(runs_dir) if run_id == "last" or e.run_id.startswith(run_id)]
    if run_id == "last":
        matches = matches[:1]
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise LookupError(f"{found} matching {run_id!r} in {runs_dir} (see `make runs`)")
    entry = matches[0]
    record = entry.record
    if record is None:
        return f"run {entry.run_id}: no result.json yet (running, or its process was killed)\nfolder: {entry.folder}"
    from agentvm.cli import summary

    timings = ", ".join(f"{k} {v:.1f}s" for k, v in record["timings"].items() if k != "total")
    lines = [
        f"run:      {record['run_id']}",
        f"agent:    {record['agent']['name']} {record['agent'].get('version') or ''}".rstrip(),
        f"started:  {record['started_at']}  finished: {record['finished_at']}",
        f"phases:   {timings}",
    ]
    for retry in record.get("retries") or []:
        lines.append(f"retry:    {retry.get('phase')} attempt {retry.get('attempt')} failed: {retry.get('error')}")
    return "\n".join(lines) + summary(record, entry.folder)
