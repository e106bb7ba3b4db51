"""The double's persistent state: one JSON file of instance records, guarded by file locks.

The global lock (``Paths.lock``) is held only for short read-modify-write sections; long operations
(boot, shutdown, transfer) take the per-instance lock instead, so parallel invocations on different
instances proceed in parallel, as with the real daemon.

Disks are overlay layers: an instance runs on ``upper/`` over its ``layers`` (topmost first) over the
image rootfs. Clone and snapshot "freeze" a stopped instance's ``upper/`` into an immutable layer
(a rename, O(1)), so a clone is a copy-on-write copy of its source and a restore swaps the layer list.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from multipass_double.backend import InstanceSpec
from multipass_double.config import Paths

Record = dict[str, Any]


class Store:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    def _ensure_dirs(self) -> None:
        for d in (self.paths.data, self.paths.instances, self.paths.layers):
            d.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Hold the global lock; yield the state; write it back if the block ends without error."""
        self._ensure_dirs()
        with _flock(self.paths.lock):
            state = self._load()
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                self._save(state)

    def snapshot(self) -> dict[str, Any]:
        """A consistent read-only copy of the state."""
        with self.locked() as state:
            return json.loads(json.dumps(state))

    @contextlib.contextmanager
    def instance_lock(self, name: str, *, shared: bool = False) -> Iterator[None]:
        """Exclusive for anything that changes the instance; ``shared`` for readers of its disk (import), which
        may run together but never while the instance is started, cloned, snapshotted, restored or deleted."""
        self._ensure_dirs()
        with _flock(self.paths.instances / f".{name}.lock", shared=shared):
            yield

    def _load(self) -> dict[str, Any]:
        try:
            state = json.loads(self.paths.state_file.read_text())
        except FileNotFoundError:
            state = {}
        state.setdefault("instances", {})
        state.setdefault("faults", {})
        return state

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.paths.state_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self.paths.state_file)

    # -- layers ----------------------------------------------------------------------------
    def spec(self, rec: Record) -> InstanceSpec:
        return InstanceSpec(
            name=rec["name"],
            directory=self.paths.instance_dir(rec["name"]),
            layers=[self.paths.layers / layer for layer in rec["layers"]],
            user_data=rec["user_data"],
            meta_data={
                "instance-id": rec["instance_id"],
                "local-hostname": rec["name"],
                "cloud-name": "multipass",
            },
        )

    def freeze(self, rec: Record) -> None:
        """Turn a stopped instance's upper dir into an immutable layer (no-op when it is empty)."""
        inst_dir = self.paths.instance_dir(rec["name"])
        upper = inst_dir / "upper"
        if not upper.is_dir() or not any(upper.iterdir()):
            return
        layer_id = uuid.uuid4().hex[:12]
        os.replace(upper, self.paths.layers / layer_id)
        upper.mkdir()
        _reset_dir(inst_dir / "work")
        rec["layers"].insert(0, layer_id)

    def discard_upper(self, rec: Record) -> None:
        inst_dir = self.paths.instance_dir(rec["name"])
        _reset_dir(inst_dir / "upper")
        _reset_dir(inst_dir / "work")

    def gc_layers(self, state: dict[str, Any]) -> None:
        used: set[str] = set()
        for rec in state["instances"].values():
            used.update(rec["layers"])
            for snap in rec["snapshots"].values():
                used.update(snap["layers"])
        if not self.paths.layers.is_dir():
            return
        for layer in self.paths.layers.iterdir():
            if layer.name not in used:
                shutil.rmtree(layer, ignore_errors=True)


def _reset_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _flock(path: Path, shared: bool = False) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
