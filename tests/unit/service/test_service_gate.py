"""The host gate: one activity cap for the shared-queue worker and the host-queue worker. No server."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from agentvm.service.gate import HostGate


async def reserved_soon(gate: HostGate, queue: str, seconds: float = 0.05):
    """The permit if ``reserve`` returns within ``seconds``, else None (and the attempt is withdrawn)."""
    task = asyncio.ensure_future(gate.reserve(queue))
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        return task.result()
    task.cancel()
    return None


def test_each_queue_polls_once_and_the_cap_holds():
    async def scenario():
        gate = HostGate(2)
        a = await reserved_soon(gate, "shared")
        assert a is not None
        assert await reserved_soon(gate, "shared") is None  # one outstanding poll per queue
        h = await reserved_soon(gate, "host")
        assert h is not None  # the host queue is never starved by the shared queue's idle poll
        gate.mark_used(a)
        gate.mark_used(h)
        assert gate.used == 2
        assert await reserved_soon(gate, "shared") is None  # full: nobody polls
        assert await reserved_soon(gate, "host") is None
        gate.release(a)
        assert await reserved_soon(gate, "shared") is not None

    asyncio.run(scenario())


def test_an_idle_poll_given_back_frees_its_queue():
    async def scenario():
        gate = HostGate(1)
        p = await reserved_soon(gate, "shared")
        gate.release(p)  # the poll ended without a task
        assert gate.polling["shared"] == 0 and gate.used == 0
        assert await reserved_soon(gate, "shared") is not None
        gate.release(p)  # a second release of the same permit changes nothing
        assert gate.polling["shared"] == 1

    asyncio.run(scenario())


def test_a_release_from_another_thread_wakes_a_waiter():
    async def scenario():
        gate = HostGate(1)
        first = await gate.reserve("shared")
        gate.mark_used(first)
        waiter = asyncio.ensure_future(gate.reserve("shared"))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        threading.Thread(target=gate.release, args=(first,)).start()
        permit = await asyncio.wait_for(waiter, 2)
        assert permit is not None and gate.used == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("capacity", [1, 2, 3])
def test_random_traffic_never_exceeds_the_cap_by_more_than_one(capacity):
    """Polls outstanding on both queues when the last slot fills may both get a task: at most one extra."""

    async def poller(gate: HostGate, queue: str, rng: random.Random, peak: list[int], stop: asyncio.Event):
        """Like the SDK's poller: reserve, poll, hand the task off (it runs on), reserve again."""
        running = set()

        async def task(permit):
            await asyncio.sleep(rng.random() / 50)
            gate.release(permit)

        while not stop.is_set():
            try:
                permit = await asyncio.wait_for(gate.reserve(queue), 0.05)
            except TimeoutError:
                continue
            await asyncio.sleep(rng.random() / 500)  # the poll
            if rng.random() < 0.2:
                gate.release(permit)  # empty poll
                continue
            gate.mark_used(permit)
            peak[0] = max(peak[0], gate.used)
            running.add(asyncio.ensure_future(task(permit)))
        await asyncio.gather(*running)

    async def scenario():
        gate = HostGate(capacity)
        rng = random.Random(capacity)
        peak = [0]
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(poller(gate, q, rng, peak, stop)) for q in ("shared", "host")]
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)
        return gate, peak[0]

    gate, peak = asyncio.run(scenario())
    assert capacity <= peak <= capacity + 1  # the cap is reached, and exceeded by one at most
    assert gate.used == 0 and all(v == 0 for v in gate.polling.values())


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        HostGate(0)
