"""Client side of the service: submit a run, follow it, read its status, cancel it, list recent runs.

:func:`recent_runs` is the entry for ``agentvm runs``: it lists the service's recent workflows with their status
(and returns ``None`` quickly when no service is reachable).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from agentvm.service import config, naming, outcome
from agentvm.service.spec import RunSpec

Say = Callable[[str], None]
TEMPORAL_STATUS = {
    "RUNNING": "running",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CANCELED": "canceled",
    "TERMINATED": "terminated",
    "CONTINUED_AS_NEW": "continued",
    "TIMED_OUT": "timed-out",
}


@dataclass(frozen=True)
class Submitted:
    workflow_id: str
    created: bool  # False: a workflow with this id (the idempotency key) already existed


@dataclass(frozen=True)
class Outcome:
    workflow_id: str
    temporal_status: str
    record: dict[str, Any] | None
    failure_type: str | None
    message: str | None

    @property
    def exit_code(self) -> int:
        return outcome.exit_code(self.temporal_status, self.record, self.failure_type)


@dataclass(frozen=True)
class ServiceRun:
    workflow_id: str
    status: str  # agentvm's status (AgentvmStatus), else derived from Temporal's
    temporal_status: str
    agent: str | None
    host: str | None
    started_at: dt.datetime | None
    closed_at: dt.datetime | None
    run_id: str | None = None
    folder: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("started_at", "closed_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def _keys() -> dict[str, Any]:
    from temporalio.common import SearchAttributeKey

    return {
        "status": SearchAttributeKey.for_keyword(naming.SA_STATUS),
        "agent": SearchAttributeKey.for_keyword(naming.SA_AGENT),
        "host": SearchAttributeKey.for_keyword(naming.SA_HOST),
        "labels": SearchAttributeKey.for_keyword_list(naming.SA_LABELS),
    }


def summary_line(prompt: bytes, agent: str | None) -> str:
    """The UI's summary of a run: agent and the prompt's first line (shortened, printable)."""
    first = next((line for line in prompt.decode("utf-8", "replace").splitlines() if line.strip()), "")
    first = re.sub(r"[\x00-\x1f\x7f]", " ", first).strip()
    return f"{agent or 'agent'}: {first[:80]}{'...' if len(first) > 80 else ''}"


def run_search_attributes(spec: RunSpec) -> Any:
    """The search attributes a run starts with (status queued, agent, host, labels): for submits and schedules."""
    from temporalio.common import SearchAttributePair, TypedSearchAttributes

    keys, labels = _keys(), [f"{k}={v}" for k, v in sorted(spec.labels.items())]
    values = {"status": naming.QUEUED, "agent": spec.agent or "default", "host": spec.host or "", "labels": labels}
    return TypedSearchAttributes([SearchAttributePair(keys[key], value) for key, value in values.items()])


def check_attributes_error(exc: Exception, settings: config.Settings) -> None:
    """Raise Unavailable with what to do when Temporal refused a start for lack of agentvm's search attributes."""
    if "search attribute" in str(exc).lower():
        raise config.Unavailable(
            f"the Temporal namespace {settings.namespace} lacks agentvm's search attributes ({exc}); start a"
            " worker once (it registers them) or create them: see docs/service.md"
        ) from None


async def submit(client: Any, settings: config.Settings, spec: RunSpec, workflow_id: str) -> Submitted:
    from temporalio.common import WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError
    from temporalio.service import RPCError

    try:
        await client.start_workflow(
            naming.WORKFLOW_TYPE,
            spec,
            id=workflow_id,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=run_search_attributes(spec),
            static_summary=summary_line(spec.prompt, spec.agent),
        )
    except WorkflowAlreadyStartedError:
        return Submitted(workflow_id, created=False)
    except RPCError as exc:
        check_attributes_error(exc, settings)
        raise
    return Submitted(workflow_id, created=True)


async def _details(client: Any, payloads: Any) -> list[Any]:
    try:
        return list(await client.data_converter.decode(payloads))
    except Exception:
        return []


async def snapshot(client: Any, workflow_id: str) -> dict[str, Any]:
    """What is known about one run now: Temporal's status, agentvm's, host, attempt, phase, last failure."""
    handle = client.get_workflow_handle(workflow_id)
    desc = await handle.describe()
    keys = _keys()
    attrs = desc.typed_search_attributes
    memo = (await desc.memo()).get("run") or {}
    status_name = desc.status.name if desc.status is not None else "UNKNOWN"
    info: dict[str, Any] = {
        "workflow_id": workflow_id,
        "temporal_status": status_name,
        "status": attrs.get(keys["status"]) or memo.get("status"),
        "agent": attrs.get(keys["agent"]),
        "host": attrs.get(keys["host"]) or None,
        "labels": list(attrs.get(keys["labels"]) or []),
        "started_at": desc.start_time.isoformat() if desc.start_time else None,
        "closed_at": desc.close_time.isoformat() if desc.close_time else None,
        "attempt": None,
        "phase": None,
        "last_failure": None,
        "run": memo or None,
    }
    for pending in desc.raw_description.pending_activities:
        info["attempt"] = pending.attempt
        details = (
            await _details(client, pending.heartbeat_details.payloads) if pending.HasField("heartbeat_details") else []
        )
        if details and isinstance(details[-1], dict):
            info["phase"] = details[-1].get("phase")
            info["host"] = details[-1].get("host") or info["host"]
        if pending.HasField("last_failure") and pending.last_failure.message:
            info["last_failure"] = pending.last_failure.message
    return info


def _describe_change(info: dict[str, Any]) -> str:
    status = info.get("status") or "queued"
    text = status
    if info.get("host"):
        text += f" on {info['host']}"
    if info.get("attempt"):
        text += f" (attempt {info['attempt']})"
    if info.get("phase") and status == naming.RUNNING:
        text += f": {info['phase']}"
    if info.get("last_failure"):
        text += f"; the last attempt failed: {info['last_failure']}"
    return text


async def wait(client: Any, workflow_id: str, follow: Say | None = None, poll: float = 1.0) -> Outcome:
    """Until the workflow closes; with ``follow``, report each change of state, host, attempt or phase."""
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError

    handle = client.get_workflow_handle(workflow_id, result_type=dict)
    follower = asyncio.create_task(_follow(client, workflow_id, follow, poll)) if follow else None
    try:
        record = await handle.result()
        return Outcome(workflow_id, "COMPLETED", record, None, None)
    except WorkflowFailureError as exc:
        cause = exc.cause
        if isinstance(cause, CancelledError):
            return Outcome(workflow_id, "CANCELED", None, None, "cancelled")
        if isinstance(cause, TerminatedError):
            return Outcome(workflow_id, "TERMINATED", None, None, cause.message)
        kind = cause.type if isinstance(cause, ApplicationError) else None
        message = getattr(cause, "message", None) or str(exc)
        return Outcome(workflow_id, "FAILED", None, kind, message)
    finally:
        if follower is not None:
            follower.cancel()


async def _follow(client: Any, workflow_id: str, say: Say, poll: float) -> None:
    last = ""
    while True:
        try:
            text = _describe_change(await snapshot(client, workflow_id))
        except Exception:
            text = last
        if text != last:
            say(text)
            last = text
        await asyncio.sleep(poll)


async def cancel(client: Any, workflow_id: str) -> None:
    await client.get_workflow_handle(workflow_id).cancel()


async def list_runs(client: Any, limit: int = 20) -> list[ServiceRun]:
    keys = _keys()
    runs: list[ServiceRun] = []
    async for wf in client.list_workflows(f"WorkflowType = '{naming.WORKFLOW_TYPE}'", limit=limit):
        attrs = wf.typed_search_attributes
        memo = (await wf.memo()).get("run") or {}
        status_name = wf.status.name if wf.status is not None else "UNKNOWN"
        status = attrs.get(keys["status"]) or memo.get("status") or TEMPORAL_STATUS.get(status_name, status_name)
        runs.append(
            ServiceRun(
                workflow_id=wf.id,
                status=status,
                temporal_status=status_name,
                agent=attrs.get(keys["agent"]),
                host=attrs.get(keys["host"]) or memo.get("host") or None,
                started_at=wf.start_time,
                closed_at=wf.close_time,
                run_id=memo.get("run_id"),
                folder=memo.get("folder"),
            )
        )
    return runs


def recent_runs(env: Mapping[str, str] = os.environ, limit: int = 20, timeout: float = 15.0) -> list[ServiceRun] | None:
    """The service's recent runs, newest first, or None when no service is reachable (for ``agentvm runs``).

    The query runs in a child process (``agentvm status --json``): a process that has used the Temporal SDK can
    crash while the interpreter shuts down (see :func:`agentvm.service.cli.exit_with`), and the caller's must not.
    """
    import subprocess
    import sys

    try:
        proc = subprocess.run(
            [sys.executable, "-m", "agentvm.service.cli", "status", "--json", "-n", str(max(1, limit))],
            env=dict(env),
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            return None
        rows = json.loads(proc.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return [
        ServiceRun(
            **{
                **row,
                "started_at": dt.datetime.fromisoformat(row["started_at"]) if row.get("started_at") else None,
                "closed_at": dt.datetime.fromisoformat(row["closed_at"]) if row.get("closed_at") else None,
            }
        )
        for row in rows
    ]


def format_runs(runs: list[ServiceRun]) -> str:
    if not runs:
        return "no service runs"
    lines = [f"{'WORKFLOW':<28} {'STATUS':<13} {'AGENT':<9} {'HOST':<14} {'STARTED':<20} RUN FOLDER"]
    for r in runs:
        started = r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else ""
        where = f"{r.host}:{r.folder}" if r.folder else ""
        lines.append(
            f"{r.workflow_id:<28} {r.status:<13} {(r.agent or ''):<9} {(r.host or ''):<14} {started:<20} {where}"
        )
    return "\n".join(lines)


def record_json(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, ensure_ascii=False)
