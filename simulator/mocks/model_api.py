#!/usr/bin/env python3
"""A local mock of the model APIs the agent CLIs speak, on one HTTP server, recording every request.

Routes (the path decides the API; any model name is accepted):

* Anthropic Messages (Claude Code): ``HEAD /api/hello``, ``POST /v1/messages`` (SSE when ``stream`` is
  true, a Message otherwise), ``POST /v1/messages/count_tokens``.
* OpenAI Chat Completions (opencode, Crush): ``POST /v1/chat/completions`` (SSE ``data:`` chunks ending
  with ``[DONE]``, or a ``chat.completion``), ``GET /v1/models``.
* OpenAI Responses (Codex): ``POST /v1/responses`` (SSE ``response.*`` events, or a ``response``).
* Gemini (Gemini CLI): ``POST /v1beta/models/<model>:streamGenerateContent?alt=sse``,
  ``…:generateContent``, ``…:countTokens``, ``GET /v1beta/models``.

Behaviour comes from a *script* (a JSON object, see ``simulator/mocks/script.py`` for every key): the
answer text, one tool call before it, an HTTP error in the API's own envelope, a delay, a slow stream of
N chunks. A running server's script can be replaced with ``server.set_script(...)``.

Record folder:

* ``requests.jsonl``: one line per request, in arrival order: ``seq``, ``time``, ``method``, ``path`` (a
  ``key=`` query parameter is redacted), ``api``, the header names, ``credential_present``,
  ``credential_header`` (``x-api-key``, ``authorization``, ``x-goog-api-key`` or ``query:key``),
  ``credential_sha256`` (never the credential itself) and the JSON ``body``.
* ``responses.jsonl``: one line per answer: ``seq`` (the request's), ``api``, ``status``, ``stream`` and,
  for streams, ``events`` (``time`` each event was written and flushed, its ``event`` name or type, the
  ``delta`` text it carried), ``aborted`` when the client went away mid-stream.

Run as ``model_api.py --host H --port P --record DIR [--script FILE]``; it prints
``listening on http://H:P`` once ready.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import itertools
import json
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

if __package__ in (None, ""):  # run as a script: make ``simulator`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from simulator.mocks import anthropic, gemini, openai_chat, openai_responses
from simulator.mocks.events import Event
from simulator.mocks.script import Plan, ScriptError, validate

MAX_BODY = 64 * 1024 * 1024
__all__ = ["MockServer", "ScriptError", "make_server", "serve"]


class MockState:
    def __init__(self, record_dir: Path, script: dict[str, Any]) -> None:
        self.record_dir = record_dir
        self.lock = threading.Lock()
        self.counter = itertools.count(1)
        self.script = validate(script)
        record_dir.mkdir(parents=True, exist_ok=True)

    def set_script(self, script: dict[str, Any]) -> None:
        checked = validate(script)
        with self.lock:
            self.script = checked

    def plan(self, api: str) -> Plan:
        with self.lock:
            return Plan(self.script, api)

    def next_seq(self) -> int:
        with self.lock:
            return next(self.counter)

    def _append(self, name: str, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False)
        with self.lock, (self.record_dir / name).open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def record(self, entry: dict[str, Any]) -> None:
        self._append("requests.jsonl", entry)

    def record_response(self, entry: dict[str, Any]) -> None:
        self._append("responses.jsonl", entry)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def credential(headers: Any, query: dict[str, str]) -> tuple[str, str] | None:
    """``(where, value)`` of the credential a request carries: an API-key header, a bearer token, a ``key``."""
    for name in ("x-api-key", "x-goog-api-key"):
        value = headers.get(name)
        if value:
            return name, value
    auth = headers.get("authorization") or ""
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return "authorization", auth[7:].strip()
    if query.get("key"):
        return "query:key", query["key"]
    return None


def _redacted_path(raw: str) -> str:
    parts = urlsplit(raw)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name == "key" for name, _ in pairs):
        return raw
    query = urlencode([(name, "REDACTED" if name == "key" else value) for name, value in pairs])
    return f"{parts.path}?{query}"


def api_of(path: str) -> str | None:
    if gemini.route(path) or gemini.MODEL_LIST.match(path):
        return gemini.API
    if path.endswith(("/messages", "/messages/count_tokens")):
        return anthropic.API
    if path.endswith("/chat/completions"):
        return openai_chat.API
    if path.endswith("/responses"):
        return openai_responses.API
    if path.endswith("/models"):
        return openai_chat.API
    return None


class BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    server_version = "agentvm-model-mock/2"
    protocol_version = "HTTP/1.1"
    state: MockState

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- request -------------------------------------------------------------------------------

    def _raw_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            return self._chunked_body()
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            raise BodyError(400, "invalid content-length") from None
        if length < 0 or length > MAX_BODY:
            raise BodyError(413, f"body larger than {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _chunked_body(self) -> bytes:
        data = bytearray()
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise BodyError(400, "invalid chunked encoding") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(data)
            if len(data) + size > MAX_BODY:
                raise BodyError(413, f"body larger than {MAX_BODY} bytes")
            data += self.rfile.read(size)
            self.rfile.readline(1024)

    def _body(self) -> dict[str, Any]:
        raw = self._raw_body()
        encoding = (self.headers.get("content-encoding") or "").lower()
        try:
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
        except (OSError, zlib.error):
            return {"_unparsed": f"undecodable {encoding} body of {len(raw)} bytes"}
        if encoding not in ("", "identity", "gzip", "deflate"):
            return {"_unparsed": f"{encoding} body of {len(raw)} bytes"}
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return {"_unparsed": raw.decode(errors="replace")}
        return body if isinstance(body, dict) else {"_unparsed": body}

    def _begin(self, body: dict[str, Any]) -> tuple[int, str, str | None, dict[str, str]]:
        """Record the request; return its sequence number, path (no query), API and query."""
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        found = credential(self.headers, query)
        seq, api = self.state.next_seq(), api_of(parts.path)
        self.state.record(
            {
                "seq": seq,
                "time": time.time(),
                "method": self.command,
                "path": _redacted_path(self.path),
                "api": api,
                "headers": sorted({k.lower() for k in self.headers}),
                "credential_present": found is not None,
                "credential_header": found[0] if found else None,
                "credential_sha256": hashlib.sha256(found[1].encode()).hexdigest() if found else None,
                "body": body,
            }
        )
        return seq, parts.path, api, query

    # -- response ------------------------------------------------------------------------------

    def _json(self, seq: int, api: str | None, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.state.record_response({"seq": seq, "api": api, "status": status, "stream": False, "time": time.time()})
        self.wfile.write(data)

    def _wait(self, seconds: float, tick: Callable[[], None] | None = None) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            if tick is not None and deadline - time.monotonic() > 0:
                tick()

    def _stream(self, seq: int, plan: Plan, events: list[Event], pings: bool = False) -> None:
        sent: list[dict[str, Any]] = []
        entry: dict[str, Any] = {"seq": seq, "api": plan.api, "status": 200, "stream": True, "events": sent}

        def write(event: Event) -> None:
            self.wfile.write(event.encode())
            self.wfile.flush()
            kind = event.name or (event.data.get("type") if isinstance(event.data, dict) else event.data)
            sent.append({"time": time.time(), "event": kind, "delta": event.delta})

        try:
            if not pings:
                self._wait(plan.delay)
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            if pings:
                self._wait(plan.delay, lambda: write(Event({"type": "ping"}, "ping")))
            deltas = 0
            for event in events:
                if event.delta is not None:
                    if deltas and plan.chunk_delay:
                        self._wait(plan.chunk_delay)
                    deltas += 1
                write(event)
        except (BrokenPipeError, ConnectionResetError):
            entry["aborted"] = True
        finally:
            self.state.record_response(entry)

    def _error(self, seq: int, api: str, status: int, payload: dict[str, Any], plan: Plan) -> None:
        self._wait(plan.delay)
        self._json(seq, api, status, payload)

    # -- verbs ---------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        seq, _, api, _ = self._begin({})
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
        self.state.record_response({"seq": seq, "api": api, "status": 200, "stream": False, "time": time.time()})

    def do_GET(self) -> None:
        seq, path, api, _ = self._begin({})
        if gemini.MODEL_LIST.match(path):
            self._json(seq, api, 200, gemini.models())
        elif path.endswith("/models"):
            self._json(seq, api, 200, openai_chat.models())
        else:
            self._json(seq, api, 404, {"error": {"type": "not_found", "message": "no such path"}})

    def do_POST(self) -> None:
        try:
            body = self._body()
        except BodyError as exc:
            seq, _, api, _ = self._begin({"_unparsed": str(exc)})
            self.close_connection = True
            self._json(seq, api, exc.status, {"error": {"type": "invalid_request_error", "message": str(exc)}})
            return
        seq, path, api, query = self._begin(body)
        if api is None:
            self._json(seq, api, 404, {"error": {"type": "not_found", "message": "no such path"}})
            return
        plan = self.state.plan(api)
        if api == gemini.API:
            self._gemini(seq, path, query, plan, body)
        elif path.endswith("/messages/count_tokens"):
            self._json(seq, api, 200, {"input_tokens": 25})
        elif plan.status:
            module = {"anthropic": anthropic, "chat": openai_chat, "responses": openai_responses}[api]
            self._error(seq, api, plan.status, module.error(plan.status, plan.error_message), plan)
        elif api == anthropic.API:
            self._answer(seq, plan, body, anthropic.stream, anthropic.message, pings=True)
        elif api == openai_chat.API:
            self._answer(seq, plan, body, openai_chat.stream, openai_chat.message)
        else:
            self._answer(seq, plan, body, openai_responses.stream, openai_responses.message)

    def _answer(
        self,
        seq: int,
        plan: Plan,
        body: dict[str, Any],
        stream: Callable[[Plan, dict[str, Any]], list[Event]],
        message: Callable[[Plan, dict[str, Any]], dict[str, Any]],
        pings: bool = False,
    ) -> None:
        if body.get("stream") is True:
            self._stream(seq, plan, stream(plan, body), pings=pings)
        else:
            self._wait(plan.delay)
            self._json(seq, plan.api, 200, message(plan, body))

    def _gemini(self, seq: int, path: str, query: dict[str, str], plan: Plan, body: dict[str, Any]) -> None:
        route = gemini.route(path)
        if route is None:
            self._json(seq, plan.api, 404, gemini.error(404, "no such method"))
            return
        model, method = route
        if method == "countTokens":
            self._json(seq, plan.api, 200, gemini.count_tokens(body))
        elif plan.status:
            self._error(seq, plan.api, plan.status, gemini.error(plan.status, plan.error_message), plan)
        elif method == "generateContent":
            self._wait(plan.delay)
            self._json(seq, plan.api, 200, gemini.message(plan, body, model))
        elif query.get("alt") == "sse":
            self._stream(seq, plan, gemini.stream(plan, body, model))
        else:  # without alt=sse the API streams one JSON array of the same chunks
            self._wait(plan.delay)
            self._json(seq, plan.api, 200, [event.data for event in gemini.stream(plan, body, model)])


class MockServer(ThreadingHTTPServer):
    """The mock's HTTP server; ``state`` holds its script and record folder."""

    daemon_threads = True
    state: MockState

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def set_script(self, script: dict[str, Any]) -> None:
        """Replace the script for the requests that arrive from now on (ScriptError if it is invalid)."""
        self.state.set_script(script)

    def requests(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.state.record_dir / "requests.jsonl")

    def responses(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.state.record_dir / "responses.jsonl")


def make_server(host: str, port: int, record_dir: Path, script: dict[str, Any]) -> MockServer:
    """A bound, not yet serving, mock (call ``serve_forever``); raises ScriptError for an invalid script."""
    state = MockState(Path(record_dir), script)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = MockServer((host, port), handler)
    server.state = state
    return server


@contextlib.contextmanager
def serve(record_dir: Path, script: dict[str, Any], host: str = "127.0.0.1", port: int = 0) -> Iterator[MockServer]:
    """A mock serving from a background thread for the duration of the ``with`` block."""
    server = make_server(host, port, record_dir, script)
    thread = threading.Thread(target=server.serve_forever, name="model-api-mock", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", required=True, type=Path)
    parser.add_argument("--script", type=Path, help="a JSON file holding the script")
    args = parser.parse_args(argv)
    try:
        script = json.loads(args.script.read_text(encoding="utf-8")) if args.script else {}
        server = make_server(args.host, args.port, args.record, script)
    except (OSError, ValueError) as exc:
        print(f"model_api: {exc}", file=sys.stderr)
        return 2
    print(f"listening on {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
