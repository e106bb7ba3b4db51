"""Where a run's files live inside the VM: defined here once and handed to the playbook as paths."""

from __future__ import annotations

from dataclasses import dataclass

HOME = "/home/ubuntu"


@dataclass(frozen=True)
class VmPaths:
    run_id: str

    @property
    def dir(self) -> str:
        """The run's folder: the unpacked bundle (spec, prompt, helper scripts) and what the agent left."""
        return f"{HOME}/.agentvm/{self.run_id}"

    @property
    def stdout(self) -> str:
        return f"{self.dir}/stdout.log"

    @property
    def summary(self) -> str:
        """agent-run.py's own record of the agent process (exit code, seconds): a claim, checked on the host."""
        return f"{self.dir}/agent-summary.json"

    @property
    def results(self) -> str:
        """The tar collect.sh writes and the playbook fetches."""
        return f"{self.dir}/results.tar"

    workspace = f"{HOME}/workspace"
    output = f"{HOME}/output"
