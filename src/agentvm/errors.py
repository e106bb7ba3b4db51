"""Outcomes of a run, their exit codes, and the errors that lead to them."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    SUCCEEDED = "succeeded"
    AGENT_FAILED = "agent_failed"
    TIMED_OUT = "timed_out"
    INFRA_FAILED = "infra_failed"
    INTERRUPTED = "interrupted"


# agentvm's exit codes (documented in docs/run.md). 2 is a usage error: nothing was created.
EXIT_CODES: dict[Status, int] = {
    Status.SUCCEEDED: 0,
    Status.AGENT_FAILED: 1,
    Status.INFRA_FAILED: 3,
    Status.TIMED_OUT: 4,
    Status.INTERRUPTED: 130,
}
USAGE_EXIT = 2


class UsageError(Exception):
    """Bad input, found before anything was created. The message says what to do."""


class RunError(Exception):
    """A run failed in a known phase."""

    def __init__(self, status: Status, phase: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.status = status
        self.phase = phase
        self.message = message
        self.hint = hint
