"""The warm pool: clones of the golden kept started and ready (``<prefix>-pool-<id>``), so a run starts its
agent without waiting for a clone, a boot and cloud-init.

State under the host's state folder::

    pool/ready/<name>.json    a ready VM: {"name", "golden_manifest_id", "created_at"}; a run claims it by
                              renaming it into claimed/ (atomic: never two runs on one VM)
    pool/claimed/<name>.json  claimed by a run, which uses it once and deletes it
    pool/keeper.lock          held (flock) by the keeper while it runs; ready VMs of a dead keeper are reaped

The keeper (``agentvm pool --size N``, ``make pool POOL=N``) fills the pool to N, keeps it there, and recycles
VMs built from an older golden or older than ``POOL_MAX_AGE``; pool VMs count against ``MAX_VMS``. Each VM is
recorded in ``instances/`` (kind ``pool``) before it is created, like a run's, so the reaper knows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agentvm.host import slots
from agentvm.host.state import StateDir, new_record
from agentvm.multipass import Multipass, MultipassError
from agentvm.run.request import new_run_id
from agentvm.settings import Settings


@dataclass(frozen=True)
class PoolVM:
    name: str
    golden_manifest_id: str | None
    created_at: float


class Pool:
    def __init__(self, settings: Settings, mp: Multipass) -> None:
        self.settings = settings
        self.mp = mp
        self.state = StateDir(settings.state_dir).ensure()
        self.root = self.state.root / "pool"
        for sub in ("ready", "claimed"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- what is there ------------------------------------------------------------------------------

    def ready(self) -> list[PoolVM]:
        found = []
        for path in sorted((self.root / "ready").glob("*.json")):
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                data = json.loads(path.read_text())
                found.append(PoolVM(str(data["name"]), data.get("golden_manifest_id"), float(data["created_at"])))
        return found

    def keeper_alive(self) -> bool:
        return slots.is_locked(self.root / "keeper.lock")

    def is_pooled(self, name: str) -> bool:
        """A ready VM of a live keeper (the reaper leaves it alone)."""
        return (self.root / "ready" / f"{name}.json").exists() and self.keeper_alive()

    # -- a run takes one ------------------------------------------------------------------------------

    def claim(self, manifest_id: str | None) -> PoolVM | None:
        """Take one ready VM of the current golden (atomic rename), or None."""
        for vm in self.ready():
            if manifest_id is not None and vm.golden_manifest_id != manifest_id:
                continue
            source = self.root / "ready" / f"{vm.name}.json"
            try:
                os.rename(source, self.root / "claimed" / source.name)
            except FileNotFoundError:
                continue  # another run was faster
            return vm
        return None

    def release(self, name: str) -> None:
        """The claiming run is done with it (it deleted the VM)."""
        with contextlib.suppress(OSError):
            (self.root / "claimed" / f"{name}.json").unlink()

    def forget(self, name: str) -> None:
        """The reaper deleted it: no file of the pool may name it any more."""
        for sub in ("ready", "claimed"):
            with contextlib.suppress(OSError):
                (self.root / sub / f"{name}.json").unlink()

    # -- the keeper ----------------------------------------------------------------------------------

    def create_one(self, manifest_id: str | None) -> PoolVM:
        """Clone the golden, start it, wait for cloud-init; recorded before it exists, and held alive (like a
        run's instance) until it is ready, so that a run's opportunistic reap never takes it for a leftover."""
        name = f"{self.settings.prefix}-pool-{new_run_id()}"
        self.state.record(new_record(name, name.rsplit("-pool-", 1)[1], "pool", []))
        lease = slots.register(self.state.root, name, name.rsplit("-pool-", 1)[1])
        try:
            return self._create(name, manifest_id)
        finally:
            lease.release()

    def _create(self, name: str, manifest_id: str | None) -> PoolVM:
        try:
            self.mp.cli.clone(self.settings.golden, name, timeout=self.settings.vm_timeout)
            self.mp.cli.start(name, timeout=self.settings.vm_timeout)
            result = self.mp.cli.exec(name, ["cloud-init", "status", "--wait"], timeout=self.settings.vm_timeout)
            if result.rc not in (0, 2):
                raise MultipassError(f"cloud-init failed in {name}: {result.stderr.strip()[:300]}")
        except MultipassError:
            self.mp.delete(name)
            self.state.forget(name)
            raise
        vm = PoolVM(name, manifest_id, time.time())
        tmp = self.root / "ready" / f".{name}.tmp"
        tmp.write_text(json.dumps(vm.__dict__))
        os.replace(tmp, self.root / "ready" / f"{name}.json")
        return vm

    def remove(self, vm: PoolVM) -> bool:
        """Delete a ready VM (recycling, draining); False when a run claimed it meanwhile."""
        source = self.root / "ready" / f"{vm.name}.json"
        gone = self.root / "claimed" / f".{vm.name}.removing"
        try:
            os.rename(source, gone)
        except FileNotFoundError:
            return False
        self.mp.delete(vm.name)
        self.state.forget(vm.name)
        gone.unlink(missing_ok=True)
        return True

    def stale(self, manifest_id: str | None, max_age: float) -> list[PoolVM]:
        now = time.time()
        return [vm for vm in self.ready() if vm.golden_manifest_id != manifest_id or now - vm.created_at > max_age]

    def room(self) -> int:
        """VMs the keeper may add without passing MAX_VMS (ready pool VMs and runs holding slots count)."""
        busy = sum(slots.is_locked(p) for p in (self.state.root / "slots").glob("*.lock"))
        return max(0, self.settings.max_vms - busy - len(self.ready()))

    def drain(self) -> int:
        removed = sum(self.remove(vm) for vm in self.ready())
        return removed


class Keeper:
    """Keeps the pool at ``size`` until stopped (SIGTERM/SIGINT: it drains the pool and exits)."""

    def __init__(self, pool: Pool, size: int, say: Callable[[str], None]) -> None:
        self.pool = pool
        self.size = size
        self.say = say
        self.stop = threading.Event()

    def run(self, interval: float = 2.0) -> int:
        lock = slots.hold(self.pool.root / "keeper.lock", content=f"{os.getpid()}\n")
        if lock is None:
            self.say("another pool keeper is running (agentvm pool --stop stops it)")
            return 1
        with lock:
            (self.pool.root / "keeper.pid").write_text(f"{os.getpid()}\n")
            while not self.stop.is_set():
                self.round()
                self.stop.wait(interval)
            drained = self.pool.drain()
            self.say(f"pool stopped: {drained} VM(s) deleted")
        return 0

    def round(self) -> None:
        try:
            golden = self.pool.mp.golden(self.pool.settings.golden)
        except MultipassError as exc:
            self.say(f"cannot read the golden: {exc}")
            return
        for vm in self.pool.stale(golden.manifest_id, self.pool.settings.pool_max_age):
            if self.pool.remove(vm):
                self.say(f"recycled {vm.name} (golden changed or older than POOL_MAX_AGE)")
        while not self.stop.is_set() and len(self.pool.ready()) < self.size and self.pool.room() > 0:
            try:
                vm = self.pool.create_one(golden.manifest_id)
            except MultipassError as exc:
                self.say(f"could not add a pool VM: {str(exc).strip()[:300]}")
                return
            self.say(f"ready: {vm.name} ({len(self.pool.ready())} of {self.size})")
