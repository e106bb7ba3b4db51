"""The rules that turn what happened into a status and an error (host facts first, the VM's claims last)."""

from __future__ import annotations

from dataclasses import dataclass

from agentvm.errors import RunError, Status
from agentvm.run.claims import Claims
from agentvm.run.parsers import Parsed

HINTS = {
    "clone": "check that the golden VM exists and is Stopped (`multipass info {golden}`); "
    "rebuild it with `make golden`",
    "start": "the clone did not start: see diagnostics/ and check Multipass (`multipass list`)",
    "ready": "cloud-init did not finish in the clone: see diagnostics/cloud-init*.log",
    "upload": "copying the prompt, workspace or credentials into the VM failed: see ansible.log",
    "agent": "see stderr.log and ansible.log",
    "fetch": "fetching the results failed: see ansible.log and warnings in result.json",
    "teardown": "delete the instance by hand: `multipass delete --purge {instance}`, or run `make clean`",
    "record": "a bug in agentvm: please report it with ansible.log",
}


@dataclass(frozen=True)
class Facts:
    """What the host knows for sure about a finished run."""

    instance: str
    golden: str
    timeout: int
    playbook_ok: bool
    interrupted: bool
    failed_phase: str | None
    failure: str
    agent_seconds: float | None  # by the host's clock
    teardown_error: str | None
    kept: bool


def hint(phase: str, facts: Facts) -> str:
    return HINTS.get(phase, "see ansible.log").format(golden=facts.golden, instance=facts.instance)


def decide(facts: Facts, claims: Claims, parsed: Parsed) -> RunError | None:
    """None for success, else the status and error of the run."""
    error = _decide(facts, claims, parsed)
    if facts.teardown_error:
        command = f"multipass delete --purge {facts.instance}"
        message = f"the VM {facts.instance} could not be deleted: {facts.teardown_error}"
        if error is None:
            return RunError(
                Status.INFRA_FAILED, "teardown", message, f"delete it by hand: `{command}` (or `make clean`)"
            )
        error.hint += f"; the VM could not be deleted either: run `{command}`"
    return error


def _timed_out(facts: Facts) -> bool:
    return facts.agent_seconds is not None and facts.agent_seconds >= facts.timeout


def _decide(facts: Facts, claims: Claims, parsed: Parsed) -> RunError | None:
    if facts.interrupted:
        phase = facts.failed_phase or "clone"
        done = "nothing to do: the VM was deleted" if not facts.teardown_error else "the VM could not be deleted"
        return RunError(Status.INTERRUPTED, phase, "the run was interrupted", done)
    if _timed_out(facts):
        return RunError(
            Status.TIMED_OUT,
            "agent",
            f"the agent did not finish within TIMEOUT={facts.timeout} s and was stopped",
            "raise TIMEOUT or narrow the prompt; what it wrote so far is in stdout.log and output/",
        )
    if not facts.playbook_ok:
        phase = facts.failed_phase or "clone"
        return RunError(Status.INFRA_FAILED, phase, f"{phase} failed: {facts.failure}", hint(phase, facts))
    if not claims.summary_present:
        return RunError(
            Status.INFRA_FAILED,
            "fetch",
            "the VM returned no readable record of the agent process (agent-summary.json)",
            hint("fetch", facts),
        )
    if claims.exit_code != 0 or parsed.is_error:
        code = "unknown" if claims.exit_code is None else str(claims.exit_code)
        message = f"the agent exited with code {code}"
        if parsed.is_error:
            message += f" and reported an error: {parsed.error}" if parsed.error else " and reported an error"
        return RunError(Status.AGENT_FAILED, "agent", message, "see stderr.log and agent-output.json")
    return None
