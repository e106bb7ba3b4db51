"""Server-sent events go through the credential proxy chunk by chunk, never buffered (real servers on loopback).

The gated test is causal, not timed: the upstream sends event i only after the client has received event
i-1 through the proxy. A proxy that buffered the answer would deadlock it (the upstream gives up after 20 s
and the client sees one event)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from agentvm.host.isolation import parse_egress
from agentvm.host.proxy import Credential, CredentialProxy, Upstream
from tests.unit.host.servers import RecordingUpstream


@pytest.fixture
def upstream():
    server = RecordingUpstream()
    yield server
    server.close()


@pytest.fixture
def proxy(upstream, tmp_path):
    started = CredentialProxy.start(
        "127.0.0.1",
        [Upstream("anthropic", upstream.url, Credential.anthropic("sk-stream-key"))],
        egress=parse_egress("open"),
        log_path=tmp_path / "egress.log",
    )
    yield started
    started.stop()


async def read_events(url: str, token: str, on_event) -> list[tuple[dict, float]]:
    events = []
    async with aiohttp.ClientSession() as session, session.get(url, headers={"x-api-key": token}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                events.append((json.loads(line[6:]), time.monotonic()))
                on_event(len(events))
    return events


def test_each_event_reaches_the_client_before_the_next_is_sent(upstream, proxy):
    url = proxy.base_url("anthropic") + "/sse"

    def release_next(received: int) -> None:
        if received < upstream.sse.count:
            upstream.sse.release[received].set()

    events = asyncio.run(asyncio.wait_for(read_events(url, proxy.token, release_next), 60))
    assert [e["i"] for e, _ in events] == [0, 1, 2, 3]
    assert upstream.seen[-1].header("x-api-key") == ["sk-stream-key"]


def test_slow_stream_receive_times(upstream, proxy, capsys):
    """A slow upstream (0.1 s between events): each event arrives before the upstream sends the next one."""
    upstream.sse_delay = 0.1
    events = asyncio.run(
        asyncio.wait_for(read_events(proxy.base_url("anthropic") + "/sse", proxy.token, lambda n: None), 60)
    )
    sent = upstream.sse.sent_at
    assert [e["i"] for e, _ in events] == [0, 1, 2, 3]
    for i in range(len(events) - 1):
        assert events[i][1] < sent[i + 1], f"event {i} arrived only after event {i + 1} was sent"
    with capsys.disabled():
        start = sent[0]
        print("\n  sent at (s):     " + " ".join(f"{t - start:.3f}" for t in sent))
        print("  received at (s): " + " ".join(f"{t - start:.3f}" for _, t in events))


def test_stop_ends_a_stream_in_progress(upstream, proxy):
    """stop() during an answer: the client's stream ends (the upstream is still waiting to send more)."""

    async def read_until_cut() -> list[int]:
        received = []
        url = proxy.base_url("anthropic") + "/sse"
        async with aiohttp.ClientSession() as session, session.get(url, headers={"x-api-key": proxy.token}) as r:
            try:
                async for raw in r.content:
                    if raw.startswith(b"data: "):
                        received.append(json.loads(raw[6:])["i"])
                        await asyncio.get_running_loop().run_in_executor(None, proxy.stop)
            except aiohttp.ClientPayloadError:
                pass
        return received

    assert asyncio.run(asyncio.wait_for(read_until_cut(), 30)) == [0]
    assert not proxy.running
