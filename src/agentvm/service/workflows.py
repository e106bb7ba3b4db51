"""The ``AgentRun`` workflow: one run, durable. Its result is the run's record (result.json plus where it is).

The workflow sandbox re-imports this module for every workflow run: it has no side effects at import, and it
imports only pure modules (passed through the sandbox). Deterministic: no clock, no randomness, no I/O here; the
run itself is the ``run_agent`` activity (:mod:`agentvm.service.activities`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from agentvm.service import naming, outcome
    from agentvm.service.spec import RunSpec

STATUS = SearchAttributeKey.for_keyword(naming.SA_STATUS)
HOST = SearchAttributeKey.for_keyword(naming.SA_HOST)
DEFAULT_TIMEOUT = 1800
# Beyond the agent's own timeout, an attempt may wait for a VM slot on its host (AGENTVM_QUEUE_TIMEOUT, default
# 1 h) and spend time on clone, start, upload, fetch and teardown.
ATTEMPT_ALLOWANCE = 5400


def retry_policy(attempts: int) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        maximum_attempts=attempts,
        non_retryable_error_types=list(outcome.NON_RETRYABLE),
    )


@workflow.defn(name=naming.WORKFLOW_TYPE)
class AgentRun:
    def __init__(self) -> None:
        self._progress: dict[str, Any] = {"status": naming.QUEUED, "host": None, "attempt": 0}

    @workflow.signal(name=naming.PROGRESS_SIGNAL)
    def attempt_started(self, info: dict[str, Any]) -> None:
        """Sent by the run activity when an attempt starts on a host."""
        host = str(info.get("host") or "")[:63]
        attempt = info.get("attempt")
        self._progress.update(status=naming.RUNNING, host=host, attempt=attempt if isinstance(attempt, int) else 0)
        workflow.upsert_search_attributes([STATUS.value_set(naming.RUNNING), HOST.value_set(host)])

    @workflow.query(name=naming.PROGRESS_QUERY)
    def progress(self) -> dict[str, Any]:
        return dict(self._progress)

    def _finish(self, status: str, summary: dict[str, Any]) -> None:
        self._progress.update(status=status, **summary)
        updates = [STATUS.value_set(status)]
        if summary.get("host"):
            updates.append(HOST.value_set(str(summary["host"])))
        workflow.upsert_search_attributes(updates)
        workflow.upsert_memo({"run": {"status": status, **summary}})

    @workflow.run
    async def run(self, spec: RunSpec) -> dict[str, Any]:
        info = workflow.info()
        if spec.trigger is not None and not spec.trigger.get("id"):
            # A schedule's runs get their workflow id from Temporal: the record names it (deterministic: the id is
            # part of the workflow's own history).
            spec.trigger = {**spec.trigger, "id": info.workflow_id}
        queue = naming.host_queue(info.task_queue, spec.host) if spec.host else info.task_queue
        try:
            record: dict[str, Any] = await workflow.execute_activity(
                naming.RUN_ACTIVITY,
                spec,
                task_queue=queue,
                result_type=dict,
                start_to_close_timeout=timedelta(seconds=(spec.timeout or DEFAULT_TIMEOUT) + ATTEMPT_ALLOWANCE),
                heartbeat_timeout=timedelta(seconds=spec.heartbeat_timeout),
                retry_policy=retry_policy(spec.attempts),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except ActivityError as err:
            await self._failed(err)
            raise AssertionError("unreachable") from None
        location = record.get("location") or {}
        self._finish(
            record["status"],
            {
                "run_id": record.get("run_id"),
                "exit_code": record.get("exit_code"),
                "host": location.get("host"),
                "folder": location.get("folder"),
                "attempt": record.get("attempt"),
            },
        )
        if record["status"] == "interrupted" and workflow.cancellation_reason() is not None:
            raise asyncio.CancelledError("the run was cancelled; its VM was deleted")
        return record

    async def _failed(self, err: ActivityError) -> None:
        """No record became the result: rejected input, a cancel before the run started, or every attempt lost."""
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == outcome.USAGE:
            self._finish(naming.REJECTED, {"error": cause.message})
            raise ApplicationError(cause.message, type=outcome.USAGE, non_retryable=True) from None
        if isinstance(cause, CancelledError) or workflow.cancellation_reason() is not None:
            self._finish("interrupted", {"error": "cancelled before the run started"})
            raise asyncio.CancelledError("cancelled before the run started") from None
        message = cause.message if cause is not None else str(err)
        self._finish(naming.LOST, {"error": message})
        await workflow.execute_local_activity(
            naming.ALERT_ACTIVITY,
            {"workflow_id": workflow.info().workflow_id, "message": message},
            start_to_close_timeout=timedelta(seconds=120),
        )
        raise ApplicationError(
            f"no attempt of the run finished ({message}); see the worker logs of the hosts it ran on",
            type="RunLost",
            non_retryable=True,
        ) from None
