"""How ``agentvm schedule list`` and ``show`` read: plain text from the dictionaries their ``--json`` prints.

Pure: no Temporal SDK. Text that came from Temporal (notes, memo) is shown without control characters.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def when(stamp: datetime | None) -> str:
    return stamp.strftime("%Y-%m-%d %H:%M:%SZ") if stamp else ""


def clean(value: Any, limit: int = 200) -> str:
    return _CONTROL.sub(" ", str(value))[:limit]


def format_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no schedules (add one with `agentvm schedule add NAME --cron ... --prompt ...`)"
    lines = [f"{'NAME':<20} {'STATE':<7} {'WHEN':<30} {'NEXT':<21} LAST RUN"]
    for r in rows:
        nxt = when(datetime.fromisoformat(r["next"])) if r["next"] else "-"
        lines.append(
            f"{r['name']:<20} {'paused' if r['paused'] else 'active':<7} {r['when']:<30} {nxt:<21}"
            f" {r['last_workflow_id'] or '-'}"
        )
    return "\n".join(lines)


def format_show(d: dict[str, Any]) -> str:
    def row(key: str, value: Any) -> str:
        return f"{key + ':':<14}{value}"

    lines = [
        row("schedule", f"{d['name']} (Temporal schedule {d['schedule_id']})"),
        row("when", d["when"]),
        row("overlap", d["overlap"]),
        row("state", "paused" if d["paused"] else "active"),
        row("note", clean(d["note"] or "", 500)),
        row("created", when(datetime.fromisoformat(d["created_at"]))),
        row("actions", f"{d['actions']} started, {d['skipped_overlap']} skipped (overlap)"),
        row("next", ", ".join(when(datetime.fromisoformat(t)) for t in d["next_action_times"]) or "-"),
        row("running", ", ".join(d["running"]) or "-"),
    ]
    lines.append("recent:" if d["recent"] else row("recent", "-"))
    lines.extend(f"  {when(datetime.fromisoformat(a['started_at']))}  {a['workflow_id']}" for a in d["recent"])
    run = d["run"]
    if run:
        labels = ",".join(f"{k}={v}" for k, v in sorted(run["labels"].items()))
        lines.append(
            row(
                "run",
                f"agent {run['agent']}, timeout {run['timeout']} s, attempts {run['attempts']},"
                f" host {run['host'] or 'any'}, workspace {run['workspace'] or '-'}"
                + (f", labels {labels}" if labels else ""),
            )
        )
        lines.append(row("prompt", f"{run['summary']} ({run['prompt_bytes']} bytes)"))
    return "\n".join(lines)
