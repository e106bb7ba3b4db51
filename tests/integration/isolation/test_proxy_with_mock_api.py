"""The credential proxy in front of the project's model-API mock (the upstream the agent CLIs are tested with):
Anthropic Messages and OpenAI Chat Completions streams arrive complete, and the mock only ever sees the real key."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.request

import pytest

from agentvm.host.isolation import parse_egress
from agentvm.host.proxy import CredentialProxy, upstream_for_variable
from simulator.mocks.model_api import make_server

REAL_KEY = "sk-mock-api-key-0123456789"


@pytest.fixture
def mock(tmp_path):
    server = make_server("127.0.0.1", 0, tmp_path / "record", {"text": "Hello through the proxy"})
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "record" / "requests.jsonl"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("variable", "path", "body", "token_header"),
    [
        (
            "ANTHROPIC_API_KEY",
            "/v1/messages?beta=true",
            {"model": "m", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            "x-api-key",
        ),
        (
            "OPENAI_API_KEY",
            "/v1/chat/completions",
            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            "authorization",
        ),
    ],
)
def test_streams_from_the_mock_through_the_proxy(mock, tmp_path, variable, path, body, token_header):
    base, record = mock
    up = upstream_for_variable(variable, REAL_KEY, base_url=base)
    proxy = CredentialProxy.start("127.0.0.1", [up], egress=parse_egress("open"), log_path=tmp_path / "egress.log")
    try:
        env = proxy.vm_env()
        token = env[variable]
        value = f"Bearer {token}" if token_header == "authorization" else token
        url = env[up.base_url_vars[0]].removesuffix("/v1") + path
        req = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={token_header: value, "content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            text = response.read().decode()
    finally:
        proxy.stop()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert "Hello through the proxy" in json.dumps(events)  # the whole stream, parsed event by event
    assert text.rstrip().endswith(("[DONE]", "}")) and len(events) >= 3
    (seen,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert seen["path"] == path
    assert seen["credential_sha256"] == hashlib.sha256(REAL_KEY.encode()).hexdigest()
    assert token not in record.read_text()
