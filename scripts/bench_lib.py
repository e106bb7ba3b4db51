"""Helpers of `make bench` (scripts/bench_ops.py): one timed `agentvm run`, the double's trace read as
intervals, the per-phase breakdown of a run's own overhead from result.json's ``profile``, and tables."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
Span = tuple[float, float]


def merged(spans: Iterable[Span]) -> list[Span]:
    """The union of intervals, as disjoint sorted intervals."""
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def overlap(spans: Sequence[Span], start: float, end: float) -> float:
    """Seconds of [start, end] covered by the disjoint ``spans``."""
    return sum(max(0.0, min(e, end) - max(s, start)) for s, e in spans)


def trace_spans(trace: Path, name: str) -> list[Span]:
    """The double's trace: the (wall-clock) intervals of the invocations that name the instance."""
    if not trace.exists():
        return []
    events = map(json.loads, trace.read_text().splitlines())
    return merged((e["start"], e["end"]) for e in events if any(name in a for a in e["argv"]))


@dataclass(frozen=True)
class Sample:
    """One `agentvm run`, timed from outside."""

    wall: float  # the command's start to its exit
    spawned: float  # the command's start (epoch seconds)
    record: dict[str, Any]
    spans: list[Span]  # Multipass (and the agent, inside `multipass exec`) for the run's instance
    agent_at: float | None  # the agent's first instruction (epoch seconds, written by the agent itself)

    @property
    def busy(self) -> float:
        return sum(e - s for s, e in self.spans)

    @property
    def overhead(self) -> float:
        return self.wall - self.busy

    @property
    def started_at(self) -> float:
        return dt.datetime.fromisoformat(self.record["started_at"].replace("Z", "+00:00")).timestamp()


def run_agentvm(env: dict[str, str], trace: Path, prompt: str = "bench") -> Sample:
    """``agentvm run --json`` with the double's trace in ``trace``; the agent prints ``date +%s.%N`` first."""
    spawned, t0 = time.time(), time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "agentvm", "run", "--json", prompt],
        env={**env, "MULTIPASS_DOUBLE_TRACE": str(trace)},
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"agentvm run failed:\n{proc.stderr[-3000:]}")
    record = json.loads(proc.stdout)
    stdout = Path(env["AGENTVM_RUNS_DIR"]) / record["run_id"] / "stdout.log"
    first = stdout.read_text().split("\n", 1)[0].strip() if stdout.exists() else ""
    try:
        agent_at: float | None = float(first)
    except ValueError:
        agent_at = None
    return Sample(wall, spawned, record, trace_spans(trace, record["instance"]["name"]), agent_at)


def mean(values: Iterable[float]) -> float:
    got = list(values)
    return statistics.fmean(got) if got else 0.0


def median(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


# -- (b) where one run's own time goes -------------------------------------------------------------------


def task_rows(sample: Sample) -> list[tuple[str, float, float]]:
    """Each task of the run: (name, seconds, of which inside Multipass or the agent)."""
    base = sample.started_at
    rows = []
    for t in sample.record.get("profile", {}).get("tasks", []):
        at = t.get("at", 0.0)
        rows.append((t["task"], t["seconds"], overlap(sample.spans, base + at, base + at + t["seconds"])))
    return rows


def phases(sample: Sample) -> dict[str, float]:
    """The run's own overhead by phase (seconds); their sum is the run's wall time minus its Multipass time."""
    prof, total = sample.record.get("profile", {}), sample.record["timings"]["total"]
    tasks = prof.get("tasks", [])
    first = min((t.get("at", 0.0) for t in tasks), default=0.0)
    last = max((t.get("at", 0.0) + t["seconds"] for t in tasks), default=0.0)
    rows = task_rows(sample)
    inside = prof.get("prepare", 0.0) + prof.get("runner_startup", 0.0) + (last - first)
    inside += prof.get("runner_shutdown", 0.0) + prof.get("collect", 0.0)
    in_tasks = sum(mp for _, _, mp in rows)
    return {
        "entry point: interpreter, imports, result.json, exit": sample.wall
        - prof.get("validate", 0.0)
        - prof.get("queue", 0.0)
        - total,
        "validation (prompt, agent, golden's `multipass info`, pool claim)": prof.get("validate", 0.0),
        "queue (host-wide VM slot)": prof.get("queue", 0.0),
        "prepare (run folder, bundle, scratch, credentials file)": prof.get("prepare", 0.0),
        "ansible-runner + playbook start-up (to the first task)": prof.get("runner_startup", 0.0),
        "tasks: Ansible's own time per task (round trips, modules)": sum(s - mp for _, s, mp in rows),
        "between tasks (Ansible: includes, strategy, callbacks)": (last - first) - sum(s for _, s, _ in rows),
        "playbook end to ansible-runner's exit": prof.get("runner_shutdown", 0.0),
        "after the playbook (teardown if left, isolation joined)": total - inside,
        "unpacking, checks, redaction (collect)": prof.get("collect", 0.0),
        "Multipass time outside the tasks (subtracted)": -(sample.busy - in_tasks),
    }


def breakdown(samples: Sequence[Sample]) -> tuple[list[tuple[str, float]], list[tuple[str, float, float]]]:
    """Phases and tasks averaged over the samples (tasks in the order of the first sample)."""
    each = [phases(s) for s in samples]
    phase_rows = [(k, mean(p[k] for p in each)) for k in each[0]]
    per_task: dict[str, list[tuple[float, float]]] = {}
    for sample in samples:
        for name, seconds, mp in task_rows(sample):
            per_task.setdefault(name, []).append((seconds, mp))
    tasks = [(n, mean(s for s, _ in v), mean(m for _, m in v)) for n, v in per_task.items()]
    return phase_rows, tasks


# -- printing ---------------------------------------------------------------------------------------------


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(section: str, title: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """``(x) title`` then an aligned table (first column left, the others right)."""
    cells = [list(header)] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"{section} {title}", flush=True)
    for row in cells:
        line = "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row))
        print(f"    {line.rstrip()}", flush=True)
