"""This host's agentvm state: one folder (``AGENTVM_STATE_DIR``, default ``~/.local/state/agentvm``).

``alive/<instance>.lock``   held (``flock``) by the run for its whole life: alive ⇔ locked (see slots.py)
``queue/``, ``slots/``      the FIFO queue and the MAX_VMS slots (slots.py)
``instances/<name>.json``   written before an instance is created: which run (or pool) owns it, its scratch
                            folders, whether it was kept. The reaper deletes only instances recorded here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SUBDIRS = ("alive", "queue", "slots", "instances")
_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{0,62}$")


@dataclass
class InstanceRecord:
    instance: str
    run_id: str
    kind: str  # run | pool
    pid: int
    created_at: float
    scratch: list[str] = field(default_factory=list)
    kept: bool = False


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> StateDir:
        for sub in SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def alive_lock(self, instance: str) -> Path:
        return self.root / "alive" / f"{instance}.lock"

    def _record_path(self, instance: str) -> Path:
        if not _NAME.match(instance):
            raise ValueError(f"not an instance name: {instance!r}")
        return self.root / "instances" / f"{instance}.json"

    def record(self, rec: InstanceRecord) -> None:
        path = self._record_path(rec.instance)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(rec)) + "\n")
        os.replace(tmp, path)

    def forget(self, instance: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._record_path(instance).unlink()

    def mark_kept(self, instance: str) -> None:
        rec = self.records().get(instance)
        if rec is not None:
            rec.kept = True
            self.record(rec)

    def records(self) -> dict[str, InstanceRecord]:
        found: dict[str, InstanceRecord] = {}
        folder = self.root / "instances"
        if not folder.is_dir():
            return found
        for path in sorted(folder.glob("*.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                data = json.loads(path.read_text())
                rec = InstanceRecord(**data)
                if rec.instance == path.stem:
                    found[rec.instance] = rec
        return found


def new_record(instance: str, run_id: str, kind: str, scratch: list[Path]) -> InstanceRecord:
    return InstanceRecord(
        instance=instance,
        run_id=run_id,
        kind=kind,
        pid=os.getpid(),
        created_at=time.time(),
        scratch=[str(p) for p in scratch],
    )
