"""What the service does with the outcome of one attempt, and which exit code a finished workflow stands for.

Retry rules (docs/service.md): ``infra_failed`` is tried again, up to the spec's attempts, on whichever worker
takes it (another host for runs on the shared queue); an attempt that ended because its worker shut down, or
whose worker died (its heartbeat stopped), is tried again too. ``agent_failed``, ``timed_out``, ``interrupted``
(a cancel) and usage errors never are. Alerts go out once per workflow: only for the attempt whose record
becomes the workflow's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentvm.errors import EXIT_CODES, Exit, Status

# Error types the run activity raises (ApplicationError.type).
USAGE = "UsageError"  # bad input: non-retryable
INFRA = "InfraFailed"  # an infra_failed record, with attempts left
SHUTDOWN = "WorkerShutdown"  # the worker stopped under the run (its VM was deleted)
QUEUE = "QueueTimeout"  # no VM slot on that host within AGENTVM_QUEUE_TIMEOUT
WORKSPACE = "WorkspaceUnavailable"  # the git workspace could not be fetched (network, server)
NON_RETRYABLE = (USAGE,)

LOST_EXIT = EXIT_CODES[Status.INFRA_FAILED]
CANCELLED_EXIT = EXIT_CODES[Status.INTERRUPTED]


@dataclass(frozen=True)
class Decision:
    retry: bool  # raise a retryable error (Temporal schedules the next attempt, if any are left)
    alert: bool  # send the alert hooks for this record (it becomes the workflow's result)
    error_type: str | None = None


def decide(status: str, attempt: int, attempts: int, worker_shutdown: bool) -> Decision:
    """One attempt ended with a record of ``status``: return it as the result, or try again?"""
    if worker_shutdown and status == Status.INTERRUPTED:
        return Decision(retry=True, alert=False, error_type=SHUTDOWN)
    if status == Status.INFRA_FAILED and attempt < attempts:
        return Decision(retry=True, alert=False, error_type=INFRA)
    return Decision(retry=False, alert=status != Status.SUCCEEDED)


def exit_code(temporal_status: str, record: dict[str, Any] | None, failure_type: str | None = None) -> int:
    """The documented exit code for a closed workflow (``agentvm submit --wait``)."""
    if temporal_status == "COMPLETED" and record is not None:
        return int(record["exit_code"])
    if temporal_status in ("CANCELED", "TERMINATED"):
        return CANCELLED_EXIT
    if temporal_status == "FAILED" and failure_type == USAGE:
        return Exit.USAGE
    return LOST_EXIT
