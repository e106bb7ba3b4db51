"""A run's scratch space, outside its run folder, removed at the end (and by the reaper after ``kill -9``).

- ``secret``: on tmpfs when the host has one (``/dev/shm/agentvm-<run-id>``): the credentials file and
  ansible-runner's private folder. Never on a disk that outlives the process if we can help it.
- ``staging``: beside the run folders, on disk (``<runs>/.staging-<run-id>``): the bundle uploaded to the VM
  (the workspace can be large) and the archives fetched from it, before they are extracted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from agentvm.settings import Settings


@dataclass(frozen=True)
class Scratch:
    secret: Path
    staging: Path

    @classmethod
    def plan(cls, settings: Settings, run_id: str) -> Scratch:
        return cls(
            secret=settings.scratch_root / f"agentvm-{run_id}",
            staging=settings.runs_dir / f".staging-{run_id}",
        )

    def paths(self) -> list[Path]:
        return [self.secret, self.staging]

    def create(self) -> None:
        for path in self.paths():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(path, 0o700)

    def remove(self) -> None:
        for path in self.paths():
            shutil.rmtree(path, ignore_errors=True)
