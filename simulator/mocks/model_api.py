#!/usr/bin/env python3
"""A local mock of the model APIs the agent CLIs speak, recording every request.

* Anthropic Messages (Claude Code): ``HEAD /api/hello``, ``POST /v1/messages`` (SSE when ``stream`` is
  true, a plain Message otherwise), ``POST /v1/messages/count_tokens``.
* OpenAI Chat Completions (opencode, Crush): ``POST /v1/chat/completions`` (SSE ``data:`` chunks ending
  with ``[DONE]``, or a ``chat.completion`` object), ``GET /v1/models``.

Behaviour comes from a *script* (a JSON object): ``text`` (the final answer), optionally ``tool``
(``{"name": ..., "input": {...}}``: the first turn asks for that tool; once the request carries the
tool's result, the final text is sent), ``delay`` (seconds to wait, sending pings, before answering),
``status`` (an HTTP error status to answer with, in Anthropic's or OpenAI's error envelope).

Every request is appended to ``requests.jsonl`` in the record folder: method, path, the header
names, whether a credential was present and its sha256 (never the credential itself), and the JSON
body. Run as ``model_api.py --host H --port P --record DIR [--script FILE]``; it prints
``listening on http://H:P`` once ready.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEFAULT_SCRIPT: dict[str, Any] = {"text": "Hello from the mock"}


class MockState:
    def __init__(self, record_dir: Path, script: dict[str, Any]) -> None:
        self.record_dir = record_dir
        self.script = {**DEFAULT_SCRIPT, **script}
        self.lock = threading.Lock()
        record_dir.mkdir(parents=True, exist_ok=True)

    def record(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False)
        with self.lock, (self.record_dir / "requests.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _credential(headers: Any) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization") or ""
    return auth[7:] if auth.lower().startswith("bearer ") else None


def _has_tool_result(body: dict[str, Any]) -> bool:
    """True when the conversation already carries a tool result (Anthropic or OpenAI shape)."""
    for message in body.get("messages", []):
        if message.get("role") == "tool":
            return True
        content = message.get("content")
        if isinstance(content, list) and any(isinstance(c, dict) and c.get("type") == "tool_result" for c in content):
            return True
    return False


# -- Anthropic Messages -------------------------------------------------------------------------


def _anthropic_blocks(script: dict[str, Any], body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    tool = script.get("tool")
    if tool and not _has_tool_result(body):
        block = {
            "type": "tool_use",
            "id": f"toolu_{uuid.uuid4().hex[:12]}",
            "name": tool["name"],
            "input": tool["input"],
        }
        return [block], "tool_use"
    return [{"type": "text", "text": script["text"]}], "end_turn"


def anthropic_events(script: dict[str, Any], body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    blocks, stop = _anthropic_blocks(script, body)
    message = {
        "id": f"msg_{uuid.uuid4().hex[:12]}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-mock"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": message})]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]
    events += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 6},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


def anthropic_message(script: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    blocks, stop = _anthropic_blocks(script, body)
    return {
        "id": f"msg_{uuid.uuid4().hex[:12]}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-mock"),
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 6},
    }


# -- OpenAI Chat Completions --------------------------------------------------------------------


def _chunk(model: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        **extra,
    }


def openai_chunks(script: dict[str, Any], body: dict[str, Any]) -> list[dict[str, Any]]:
    model = body.get("model", "mock-model")
    tool = script.get("tool")
    chunks = [_chunk(model, [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    if tool and not _has_tool_result(body):
        call = {
            "index": 0,
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": tool["name"], "arguments": json.dumps(tool["input"])},
        }
        chunks.append(_chunk(model, [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]))
        finish = "tool_calls"
    else:
        chunks.append(_chunk(model, [{"index": 0, "delta": {"content": script["text"]}, "finish_reason": None}]))
        finish = "stop"
    chunks.append(_chunk(model, [{"index": 0, "delta": {}, "finish_reason": finish}]))
    usage = {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}
    chunks.append(_chunk(model, [], usage=usage))
    return chunks


def openai_completion(script: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": script["text"]}
    finish = "stop"
    tool = script.get("tool")
    if tool and not _has_tool_result(body):
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{uuid.uuid4().hex[:12]}",
                    "type": "function",
                    "function": {"name": tool["name"], "arguments": json.dumps(tool["input"])},
                }
            ],
        }
        finish = "tool_calls"
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "mock-model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16},
    }


# -- HTTP -------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server_version = "agentvm-model-mock/1"
    protocol_version = "HTTP/1.1"
    state: MockState

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {"_unparsed": raw.decode(errors="replace")}

    def _record(self, body: dict[str, Any]) -> None:
        credential = _credential(self.headers)
        self.state.record(
            {
                "time": time.time(),
                "method": self.command,
                "path": self.path,
                "headers": sorted(k.lower() for k in self.headers),
                "credential_present": credential is not None,
                "credential_sha256": hashlib.sha256(credential.encode()).hexdigest() if credential else None,
                "body": body,
            }
        )

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse_start(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

    def _send(self, text: str) -> None:
        self.wfile.write(text.encode())
        self.wfile.flush()

    def _wait(self) -> None:
        deadline = time.monotonic() + float(self.state.script.get("delay", 0))
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def do_HEAD(self) -> None:
        self._record({})
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._record({})
        if self.path.split("?")[0].endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "mock"}]})
        else:
            self._json(404, {"error": {"type": "not_found", "message": self.path}})

    def do_POST(self) -> None:
        body = self._body()
        self._record(body)
        path = self.path.split("?")[0]
        status = self.state.script.get("status")
        if path.endswith("/messages/count_tokens"):
            self._json(200, {"input_tokens": 25})
        elif path.endswith("/messages"):
            self._anthropic(body, status)
        elif path.endswith("/chat/completions"):
            self._openai(body, status)
        else:
            self._json(404, {"error": {"type": "not_found", "message": self.path}})

    def _anthropic(self, body: dict[str, Any], status: int | None) -> None:
        if status:
            self._json(int(status), {"type": "error", "error": {"type": "api_error", "message": "scripted failure"}})
            return
        if not body.get("stream"):
            self._wait()
            self._json(200, anthropic_message(self.state.script, body))
            return
        self._sse_start()
        delay_end = time.monotonic() + float(self.state.script.get("delay", 0))
        while time.monotonic() < delay_end:
            self._send('event: ping\ndata: {"type": "ping"}\n\n')
            time.sleep(min(1.0, max(0.0, delay_end - time.monotonic())))
        for name, data in anthropic_events(self.state.script, body):
            self._send(f"event: {name}\ndata: {json.dumps(data)}\n\n")

    def _openai(self, body: dict[str, Any], status: int | None) -> None:
        if status:
            self._json(int(status), {"error": {"type": "server_error", "message": "scripted failure"}})
            return
        self._wait()
        if not body.get("stream"):
            self._json(200, openai_completion(self.state.script, body))
            return
        self._sse_start()
        for chunk in openai_chunks(self.state.script, body):
            self._send(f"data: {json.dumps(chunk)}\n\n")
        self._send("data: [DONE]\n\n")


def make_server(host: str, port: int, record_dir: Path, script: dict[str, Any]) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"state": MockState(record_dir, script)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", required=True, type=Path)
    parser.add_argument("--script", type=Path)
    args = parser.parse_args(argv)
    script = json.loads(args.script.read_text()) if args.script else {}
    server = make_server(args.host, args.port, args.record, script)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
