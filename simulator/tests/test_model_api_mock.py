"""The model-API mock over real HTTP on loopback: SSE framing, tool turns, recording without secrets."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.mocks.model_api import make_server

StartMock = Callable[[dict[str, Any]], tuple[int, Path]]


@pytest.fixture
def mock(tmp_path: Path) -> Iterator[StartMock]:
    def start(script: dict[str, Any]) -> tuple[int, Path]:
        server = make_server("127.0.0.1", 0, tmp_path / "rec", script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server.server_address[1], tmp_path / "rec" / "requests.jsonl"

    started: list = []
    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def post(port: int, path: str, body: Any, headers: dict[str, str]) -> tuple[int, str | None, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=json.dumps(body), headers={"content-type": "application/json", **headers})
    response = conn.getresponse()
    return response.status, response.getheader("content-type"), response.read().decode()


def sse_events(text: str) -> list[tuple[str | None, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event"), json.loads(fields["data"]) if fields["data"] != "[DONE]" else None))
    return events


def test_anthropic_stream_follows_the_messages_event_order(mock: StartMock) -> None:
    port, record = mock({"text": "answer ✓"})
    body = {"model": "claude-mock", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    status, ctype, text = post(port, "/v1/messages?beta=true", body, {"x-api-key": "sk-secret-marker"})
    assert (status, ctype) == (200, "text/event-stream")
    names = [name for name, _ in sse_events(text)]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = sse_events(text)[3][1]
    assert delta["delta"] == {"type": "text_delta", "text": "answer ✓"}
    entry = json.loads(record.read_text())
    assert entry["path"] == "/v1/messages?beta=true" and entry["body"] == body
    assert entry["credential_sha256"] == hashlib.sha256(b"sk-secret-marker").hexdigest()
    assert "sk-secret-marker" not in record.read_text()


def test_anthropic_tool_turn_then_final_text(mock: StartMock) -> None:
    port, _ = mock({"text": "done", "tool": {"name": "Bash", "input": {"command": "echo hi > out.txt"}}})
    first = {"stream": True, "messages": [{"role": "user", "content": "go"}]}
    events = sse_events(post(port, "/v1/messages", first, {"x-api-key": "k"})[2])
    start = events[1][1]["content_block"]
    assert start["type"] == "tool_use" and start["name"] == "Bash"
    assert json.loads(events[3][1]["delta"]["partial_json"]) == {"command": "echo hi > out.txt"}
    assert events[5][1]["delta"]["stop_reason"] == "tool_use"
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": start["id"], "content": "ok"}]}
    second = {"messages": [*first["messages"], {"role": "assistant", "content": [start]}, result]}
    status, _, text = post(port, "/v1/messages", second, {"x-api-key": "k"})
    message = json.loads(text)
    assert status == 200 and message["content"] == [{"type": "text", "text": "done"}]
    assert message["stop_reason"] == "end_turn"


def test_openai_chat_completions_stream_ends_with_done(mock: StartMock) -> None:
    port, _ = mock({"text": "chat answer"})
    body = {"model": "m1", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    status, _, text = post(port, "/v1/chat/completions", body, {"authorization": "Bearer k"})
    events = sse_events(text)
    assert status == 200 and events[-1] == (None, None)
    contents = [c["choices"][0]["delta"].get("content") for _, c in events[:-1] if c["choices"]]
    assert "chat answer" in contents
    assert events[-2][1]["usage"]["total_tokens"] == 16


def test_scripted_error_status(mock: StartMock) -> None:
    port, _ = mock({"status": 529})
    status, _, text = post(port, "/v1/messages", {"stream": True}, {"x-api-key": "k"})
    assert status == 529 and json.loads(text)["type"] == "error"
