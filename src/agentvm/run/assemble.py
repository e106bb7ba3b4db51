"""Assembling the run record from what the host knows (request, timings, outcome) and what the VM returned
(claims, the agent's parsed output); text from the VM is redacted, oversized values dropped with a warning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentvm.errors import RunError
from agentvm.run import record as record_mod
from agentvm.run.claims import Claims
from agentvm.run.parsers import PARSERS, Parsed
from agentvm.run.progress import now_iso
from agentvm.run.request import RunRequest
from agentvm.textsafe import Redactor

MAX_USAGE = 64 * 1024


def parse_output(req: RunRequest, run_dir: Path) -> Parsed:
    """The agent's stdout read by its profile's parser; its machine-readable part into agent-output.json."""
    stdout = run_dir / "stdout.log"
    if not stdout.exists():
        return Parsed()
    parsed = PARSERS[req.profile.output](stdout, run_dir / "stderr.log")
    if parsed.raw is not None:
        (run_dir / "agent-output.json").write_text(json.dumps(parsed.raw, indent=2, ensure_ascii=False) + "\n")
    return parsed


def workspace_entry(req: RunRequest, run_dir: Path, said: Claims) -> dict[str, Any] | None:
    if req.workspace is None:
        return None
    return {
        "source": str(req.workspace.root),
        "files": len(req.workspace.files),
        "bytes": req.workspace.bytes,
        "patch": "workspace.patch" if (run_dir / "workspace.patch").exists() else None,
        "commits": said.commits or 0,
    }


def record(
    req: RunRequest,
    run_dir: Path,
    *,
    error: RunError | None,
    said: Claims,
    parsed: Parsed,
    timings: dict[str, float],
    warnings: list[dict[str, str]],
    retries: list[dict[str, Any]],
    started_at: str,
    redactor: Redactor,
    egress: dict[str, Any],
    host: str | None = None,
) -> dict[str, Any]:
    usage = parsed.usage
    if usage is not None and len(json.dumps(usage)) > MAX_USAGE:
        warnings.append({"code": "usage_too_large", "path": "stdout.log", "message": "the agent's usage was too large"})
        usage = None
    rec: dict[str, Any] = {
        "schema_version": record_mod.SCHEMA_VERSION,
        "run_id": req.run_id,
        "status": record_mod.status(error),
        "exit_code": record_mod.exit_code(error),
        "agent": {
            "name": req.profile.name,
            "version": said.agent_version,
            "model": parsed.model or req.model,
            "exit_code": said.exit_code,
        },
        "prompt": record_mod.prompt_digest(req.prompt),
        "result_text": redactor.text(parsed.result_text) if parsed.result_text else None,
        "usage": usage,
        "cost": parsed.cost,
        "timings": timings,
        "instance": {
            "name": req.instance,
            "golden": req.golden,
            "golden_manifest_id": req.golden_manifest_id,
            "kept": req.keep,
            "connection": req.connection,
            "from_pool": req.from_pool,
        },
        "workspace": workspace_entry(req, run_dir, said),
        "retries": retries,
        "started_at": started_at,
        "finished_at": now_iso(),
        "error": None if error is None else {k: redactor.text(v) for k, v in error.as_error().items()},
        "warnings": [{k: redactor.text(str(v)) for k, v in w.items()} for w in warnings],
        "labels": dict(req.labels),
        "trigger": dict(req.trigger) if req.trigger else None,
        "location": record_mod.location(run_dir, host),
        "credentials": {"mode": req.credentials_mode if req.secrets else "none", "names": sorted(req.secrets)},
        "egress": egress,
    }
    if req.attempt is not None:
        rec["attempt"] = req.attempt
    return rec


def profile(marks: dict[str, float], tasks: list[dict[str, Any]], playbook_end: float | None) -> dict[str, Any]:
    """Where the run's time went, on the host's clock: validation and queue, preparing (run folder, bundle,
    scratch) until ansible-runner starts, its start-up (to the first task), each task (``at``: its start, in
    seconds after the run's start, i.e. ``started_at``), the playbook's end, unpacking (scripts/bench_ops.py
    and docs/benchmarks.md read this)."""
    out: dict[str, Any] = {k: round(marks[k], 3) for k in ("validate", "queue", "collect") if k in marks}
    start, t0 = marks.get("runner_start"), marks.get("run_start")
    if start is not None and t0 is not None:
        out["prepare"] = round(max(0.0, start - t0), 3)
    if start is not None and tasks:
        out["runner_startup"] = round(max(0.0, tasks[0]["start"] - start), 3)
    out["tasks"] = [_span(t, t0) for t in tasks if t["end"] is not None]
    ended = [t["end"] for t in tasks if t["end"] is not None]
    if playbook_end is not None and ended:
        out["runner_shutdown"] = round(max(0.0, playbook_end - max(ended)), 3)
    return out


def _span(task: dict[str, Any], t0: float | None) -> dict[str, Any]:
    span: dict[str, Any] = {"task": task["task"], "seconds": round(max(0.0, task["end"] - task["start"]), 3)}
    if t0 is not None:
        span["at"] = round(task["start"] - t0, 3)
    return span
