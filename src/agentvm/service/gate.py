"""One activity cap for both of a host's workers: the shared task queue's and the host queue's.

A Temporal worker polls one task queue, so a host runs two (shared runs, runs pinned to it), and each worker's
``max_concurrent_activities`` would count alone. The gate is their common slot supplier: a worker may poll for a
run only while fewer than ``capacity`` (MAX_VMS) runs are in progress on the host and it has no other poll
outstanding. A poll that is already outstanding when the last slot fills cannot be withdrawn, so when both queues
have work at that moment the host can take one run beyond the cap; that run waits for a VM slot on the host (the
VM cap itself is enforced by agentvm's slot locks, shared with direct ``make run`` runs).

The SDK calls ``reserve_slot`` on the worker's event loop and the other methods possibly from another thread:
the counters are guarded by a threading lock, and waiters are woken through their loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from temporalio.worker import (
    CustomSlotSupplier,
    FixedSizeSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
    WorkerTuner,
)


class _Permit(SlotPermit):
    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.used = False
        self.released = False


class HostGate:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.used = 0
        self.polling: dict[str, int] = {}
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def _grant(self, queue: str) -> _Permit | None:
        with self._lock:
            if self.used < self.capacity and self.polling.get(queue, 0) == 0:
                self.polling[queue] = self.polling.get(queue, 0) + 1
                return _Permit(queue)
            return None

    async def reserve(self, queue: str) -> _Permit:
        loop = asyncio.get_running_loop()
        while True:
            permit = self._grant(queue)
            if permit is not None:
                return permit
            future: asyncio.Future[None] = loop.create_future()
            with self._lock:
                self._waiters.append((loop, future))
            if self._grant_possible(queue):
                self._wake()
            try:
                await future
            finally:
                with self._lock:
                    self._waiters = [w for w in self._waiters if w[1] is not future]

    def _grant_possible(self, queue: str) -> bool:
        with self._lock:
            return self.used < self.capacity and self.polling.get(queue, 0) == 0

    def try_reserve(self, queue: str) -> _Permit | None:
        return self._grant(queue)

    def mark_used(self, permit: Any) -> None:
        if not isinstance(permit, _Permit) or permit.used or permit.released:
            return
        with self._lock:
            permit.used = True
            self.polling[permit.queue] -= 1
            self.used += 1
        self._wake()

    def release(self, permit: Any) -> None:
        if not isinstance(permit, _Permit) or permit.released:
            return
        with self._lock:
            permit.released = True
            if permit.used:
                self.used -= 1
            else:
                self.polling[permit.queue] -= 1
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    def supplier(self, queue: str) -> CustomSlotSupplier:
        return _GateSupplier(self, queue)

    def tuner(self, queue: str, workflow_slots: int = 50) -> WorkerTuner:
        return WorkerTuner.create_composite(
            workflow_supplier=FixedSizeSlotSupplier(workflow_slots),
            activity_supplier=self.supplier(queue),
            local_activity_supplier=FixedSizeSlotSupplier(10),
            nexus_supplier=FixedSizeSlotSupplier(1),
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _GateSupplier(CustomSlotSupplier):
    def __init__(self, gate: HostGate, queue: str) -> None:
        self.gate = gate
        self.queue = queue

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        return await self.gate.reserve(self.queue)

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        return self.gate.try_reserve(self.queue)

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        self.gate.mark_used(ctx.permit)

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        self.gate.release(ctx.permit)
