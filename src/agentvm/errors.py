"""Outcomes of a run, every exit code of ``agentvm`` (one table, documented in docs/run.md), and the errors."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    SUCCEEDED = "succeeded"
    AGENT_FAILED = "agent_failed"
    TIMED_OUT = "timed_out"
    INFRA_FAILED = "infra_failed"
    INTERRUPTED = "interrupted"


class Exit:
    """Every exit code of ``agentvm``. A run's code follows its status; the others mean nothing ran."""

    SUCCEEDED = 0
    AGENT_FAILED = 1  # also: a subcommand found a problem (doctor, clean, show)
    USAGE = 2  # bad input: nothing was created
    INFRA_FAILED = 3
    TIMED_OUT = 4
    QUEUE_TIMEOUT = 5  # no VM slot in time: nothing was created
    INTERRUPTED = 130


#: The exit code of each run status.
EXIT_CODES: dict[Status, int] = {
    Status.SUCCEEDED: Exit.SUCCEEDED,
    Status.AGENT_FAILED: Exit.AGENT_FAILED,
    Status.INFRA_FAILED: Exit.INFRA_FAILED,
    Status.TIMED_OUT: Exit.TIMED_OUT,
    Status.INTERRUPTED: Exit.INTERRUPTED,
}

#: What each exit code means, for `agentvm --help` and the documentation (checked equal by a test).
EXIT_MEANINGS: dict[int, str] = {
    Exit.SUCCEEDED: "succeeded: the agent finished and reported success",
    Exit.AGENT_FAILED: "agent_failed: the agent exited non-zero or reported an error (other commands: a problem found)",
    Exit.USAGE: "usage error: nothing was created (one line says what to fix)",
    Exit.INFRA_FAILED: "infra_failed: clone, start, upload, fetch or teardown failed (error.phase says which)",
    Exit.TIMED_OUT: "timed_out: the agent exceeded TIMEOUT",
    Exit.QUEUE_TIMEOUT: "no VM slot within AGENTVM_QUEUE_TIMEOUT: nothing was created",
    Exit.INTERRUPTED: "interrupted: SIGINT/SIGTERM/SIGHUP or a cancel; the VM was deleted",
}


class UsageError(Exception):
    """Bad input, found before anything was created. The message says what to do."""


class QueueTimeout(Exception):
    """No VM slot became free within the queue wait limit (nothing was created)."""


class RunError(Exception):
    """A run failed in a known phase."""

    def __init__(self, status: Status, phase: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.status = status
        self.phase = phase
        self.message = message
        self.hint = hint

    def as_error(self) -> dict[str, str]:
        return {"phase": self.phase, "message": self.message, "hint": self.hint}
