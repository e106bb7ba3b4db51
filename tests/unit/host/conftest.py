"""Servers on loopback for the proxy tests, each stopped after its test."""

from __future__ import annotations

import pytest

from tests.unit.host.servers import EchoServer, RecordingUpstream, TcpOrigin


@pytest.fixture
def upstream():
    """A recording aiohttp upstream (the model API stand-in)."""
    server = RecordingUpstream()
    yield server
    server.close()


@pytest.fixture
def echo():
    """A TCP echo server (what CONNECT tunnels lead to)."""
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def origin():
    """A plain HTTP origin that echoes the request head it got."""
    server = TcpOrigin()
    yield server
    server.close()
