"""The model-API mock over real HTTP on loopback, read back by a small client written here (not the mock's code):
every API's framing (Anthropic Messages, OpenAI Chat Completions, OpenAI Responses, Gemini), tool turns, error
envelopes, delays, slow streams sent chunk by chunk, and the request record, which must never hold a secret."""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from simulator.mocks import presets
from simulator.mocks.model_api import make_server
from simulator.mocks.script import ScriptError

MOCK_SCRIPT = Path(__file__).resolve().parents[1] / "mocks" / "model_api.py"
GEMINI_STREAM = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
GEMINI_JSON = "/v1beta/models/gemini-2.5-pro:generateContent"


@pytest.fixture
def mock(tmp_path):
    """``mock(script)`` starts a server on 127.0.0.1 and returns it; all are stopped at the end."""
    started = []

    def start(script):
        server = make_server("127.0.0.1", 0, tmp_path / "rec", script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


# -- a minimal client ---------------------------------------------------------------------------


class Reply:
    def __init__(self, status, headers, body, events):
        self.status, self.headers, self.body, self.events = status, headers, body, events

    def json(self):
        return json.loads(self.body)

    def data(self):
        """The JSON payloads of the SSE events (``[DONE]`` as None)."""
        return [None if e["data"] == "[DONE]" else json.loads(e["data"]) for e in self.events]


def request(server, path, body=None, headers=None, method="POST", raw=None):
    """Send one request; an SSE reply is read line by line, stamping the time each event arrived."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=payload, headers={"content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    events = []
    if response.getheader("content-type") == "text/event-stream":
        fields = {}
        while line := response.fp.readline():
            line = line.decode().rstrip("\r\n")
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                events.append({**fields, "received": time.time()})
                fields = {}
        body = b""
    else:
        body = response.read()
    conn.close()
    return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body, events)


def records(server):
    path = server.state.record_dir / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def answers(server):
    path = server.state.record_dir / "responses.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


WRITE = {"name": "write_file", "input": {"file_path": "/tmp/x/hello.txt", "content": "hi\n"}}
GEMINI_TOOLS = [{"functionDeclarations": [{"name": "write_file", "parameters": {"type": "object"}}]}]
RESPONSES_TOOLS = [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}]
ANTHROPIC_TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]
CHAT_TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]


# -- Anthropic Messages -------------------------------------------------------------------------


def test_anthropic_stream_follows_the_messages_event_order(mock):
    server = mock({"text": "answer ✓"})
    body = {"model": "claude-mock", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    reply = request(server, "/v1/messages?beta=true", body, {"x-api-key": "sk-secret-marker"})
    assert (reply.status, reply.headers["content-type"]) == (200, "text/event-stream")
    names = [e["event"] for e in reply.events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [d["type"] for d in reply.data()] == names
    assert reply.data()[3]["delta"] == {"type": "text_delta", "text": "answer ✓"}
    assert reply.data()[5]["delta"]["stop_reason"] == "end_turn"
    [entry] = records(server)
    assert entry["path"] == "/v1/messages?beta=true" and entry["body"] == body and entry["api"] == "anthropic"
    assert entry["credential_header"] == "x-api-key"
    assert entry["credential_sha256"] == hashlib.sha256(b"sk-secret-marker").hexdigest()
    assert "sk-secret-marker" not in (server.state.record_dir / "requests.jsonl").read_text()


def test_anthropic_tool_turn_then_final_text(mock):
    server = mock({"text": "done", "tool": {"name": "Bash", "input": {"command": "echo hi > out.txt"}}})
    first = {"stream": True, "tools": ANTHROPIC_TOOLS, "messages": [{"role": "user", "content": "go"}]}
    data = request(server, "/v1/messages", first, {"x-api-key": "k"}).data()
    start = data[1]["content_block"]
    assert start["type"] == "tool_use" and start["name"] == "Bash" and start["id"].startswith("toolu_")
    assert json.loads(data[3]["delta"]["partial_json"]) == {"command": "echo hi > out.txt"}
    assert data[5]["delta"]["stop_reason"] == "tool_use"
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": start["id"], "content": "ok"}]}
    second = {
        "tools": ANTHROPIC_TOOLS,
        "messages": [*first["messages"], {"role": "assistant", "content": [start]}, result],
    }
    reply = request(server, "/v1/messages", second, {"x-api-key": "k"})
    message = reply.json()
    assert reply.status == 200 and message["content"] == [{"type": "text", "text": "done"}]
    assert message["stop_reason"] == "end_turn"


def test_a_request_without_tools_gets_text_even_when_a_tool_is_scripted(mock):
    """Side requests (titles, summaries) declare no tools: asking them for a tool call would break the CLI."""
    server = mock({"text": "a title", "tool": {"name": "Bash", "input": {"command": "true"}}})
    reply = request(server, "/v1/messages", {"messages": [{"role": "user", "content": "title?"}]})
    assert reply.json()["content"] == [{"type": "text", "text": "a title"}]


def test_anthropic_error_uses_the_anthropic_envelope(mock):
    server = mock({"status": 529, "error_message": "busy"})
    reply = request(server, "/v1/messages", {"stream": True}, {"x-api-key": "k"})
    assert reply.status == 529
    assert reply.json() == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}


def test_count_tokens_and_hello(mock):
    server = mock({})
    assert request(server, "/v1/messages/count_tokens", {"messages": []}).json() == {"input_tokens": 25}
    assert request(server, "/api/hello", method="HEAD").status == 200


# -- OpenAI Chat Completions --------------------------------------------------------------------


def test_openai_chat_completions_stream_ends_with_done(mock):
    server = mock({"text": "chat answer"})
    body = {"model": "m1", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    reply = request(server, "/v1/chat/completions", body, {"authorization": "Bearer k"})
    data = reply.data()
    assert reply.status == 200 and data[-1] is None and "event" not in reply.events[0]
    contents = [c["choices"][0]["delta"].get("content") for c in data[:-1] if c["choices"]]
    assert "".join(filter(None, contents)) == "chat answer"
    assert data[-3]["choices"][0]["finish_reason"] == "stop"
    assert data[-2]["choices"] == [] and data[-2]["usage"]["total_tokens"] == 16


def test_openai_chat_tool_call_then_answer(mock):
    server = mock({"text": "done", "tool": {"name": "bash", "input": {"command": "ls"}}})
    first = {"model": "m1", "tools": CHAT_TOOLS, "messages": [{"role": "user", "content": "go"}]}
    message = request(server, "/v1/chat/completions", first).json()["choices"][0]
    [call] = message["message"]["tool_calls"]
    assert message["finish_reason"] == "tool_calls" and call["function"]["name"] == "bash"
    assert json.loads(call["function"]["arguments"]) == {"command": "ls"}
    tool_reply = {"role": "tool", "tool_call_id": call["id"], "content": "a b"}
    second = {**first, "messages": [*first["messages"], message["message"], tool_reply], "stream": True}
    data = request(server, "/v1/chat/completions", second).data()
    assert [c["choices"][0]["delta"].get("content") for c in data[1:2]] == ["done"]


def test_openai_error_uses_the_openai_envelope(mock):
    server = mock({"status": 429})
    reply = request(server, "/v1/chat/completions", {"stream": True})
    assert reply.status == 429
    assert reply.json()["error"] == {
        "message": "scripted failure",
        "type": "rate_limit_exceeded",
        "param": None,
        "code": "rate_limit_exceeded",
    }


def test_models_list(mock):
    server = mock({})
    assert request(server, "/v1/models", method="GET").json()["data"][0]["id"] == "mock-model"
    assert request(server, "/nowhere", method="GET").status == 404


# -- Gemini -------------------------------------------------------------------------------------


def gemini_body(*contents, tools=None):
    body = {"contents": list(contents) or [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {}}
    return {**body, "tools": tools} if tools else body


def test_gemini_stream_is_sse_with_finish_reason_and_usage_on_the_last_chunk(mock):
    server = mock({"text": "Gemini says hi", "chunks": 3})
    reply = request(server, GEMINI_STREAM, gemini_body(), {"x-goog-api-key": "AIza-secret"})
    assert (reply.status, reply.headers["content-type"]) == (200, "text/event-stream")
    chunks = reply.data()
    assert len(chunks) == 3 and all("event" not in e for e in reply.events)
    texts = [part["text"] for c in chunks for part in c["candidates"][0]["content"]["parts"]]
    assert "".join(texts) == "Gemini says hi"
    assert all(c["candidates"][0]["content"]["role"] == "model" for c in chunks)
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, "STOP"]
    usage = chunks[-1]["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert chunks[-1]["modelVersion"] == "gemini-2.5-pro"
    [entry] = records(server)
    assert (entry["api"], entry["credential_header"]) == ("gemini", "x-goog-api-key")
    assert entry["credential_sha256"] == hashlib.sha256(b"AIza-secret").hexdigest()


def test_gemini_function_call_then_text_once_the_function_response_comes_back(mock):
    server = mock({"text": "file written", "tool": WRITE})
    user = {"role": "user", "parts": [{"text": "write it"}]}
    [chunk] = request(server, GEMINI_STREAM, gemini_body(user, tools=GEMINI_TOOLS)).data()
    candidate = chunk["candidates"][0]
    assert candidate["content"]["parts"] == [{"functionCall": {"name": "write_file", "args": WRITE["input"]}}]
    assert candidate["finishReason"] == "STOP" and "usageMetadata" in chunk
    answer = {"functionResponse": {"id": "write_file_1", "name": "write_file", "response": {"output": "ok"}}}
    body = gemini_body(user, candidate["content"], {"role": "user", "parts": [answer]}, tools=GEMINI_TOOLS)
    [final] = request(server, GEMINI_STREAM, body).data()
    assert final["candidates"][0]["content"]["parts"] == [{"text": "file written"}]


def test_gemini_generate_content_is_one_json_object(mock):
    server = mock({"text": "plain"})
    reply = request(server, GEMINI_JSON, gemini_body())
    assert reply.headers["content-type"] == "application/json"
    candidate = reply.json()["candidates"][0]
    assert candidate["content"]["parts"] == [{"text": "plain"}] and candidate["finishReason"] == "STOP"


def test_gemini_stream_without_alt_sse_is_a_json_array(mock):
    server = mock({"text": "abcd", "chunks": 2})
    reply = request(server, GEMINI_STREAM.split("?")[0], gemini_body())
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in reply.json()] == ["ab", "cd"]


@pytest.mark.parametrize(
    ("status", "name"), [(400, "INVALID_ARGUMENT"), (429, "RESOURCE_EXHAUSTED"), (503, "UNAVAILABLE")]
)
def test_gemini_error_uses_the_google_envelope(mock, status, name):
    server = mock({"status": status, "error_message": "nope"})
    for path in (GEMINI_STREAM, GEMINI_JSON):
        reply = request(server, path, gemini_body())
        assert reply.status == status
        assert reply.json() == {"error": {"code": status, "message": "nope", "status": name}}


def test_gemini_count_tokens_models_and_unknown_method(mock):
    server = mock({})
    assert request(server, "/v1beta/models/m:countTokens", gemini_body()).json()["totalTokens"] > 0
    assert request(server, "/v1beta/models", method="GET").json()["models"][0]["name"] == "models/gemini-mock"
    assert request(server, "/v1beta/models/m:embedEverything", gemini_body()).status == 404


def test_a_key_in_the_query_is_recorded_as_a_hash_and_redacted_from_the_path(mock):
    server = mock({})
    request(server, "/v1beta/models/m:generateContent?key=AIza-query-secret&x=1", gemini_body())
    [entry] = records(server)
    assert entry["credential_header"] == "query:key"
    assert entry["credential_sha256"] == hashlib.sha256(b"AIza-query-secret").hexdigest()
    assert entry["path"] == "/v1beta/models/m:generateContent?key=REDACTED&x=1"
    assert "AIza-query-secret" not in (server.state.record_dir / "requests.jsonl").read_text()


# -- OpenAI Responses ---------------------------------------------------------------------------


def responses_body(*items, tools=None):
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    return {"model": "gpt-mock", "stream": True, "store": False, "input": list(items) or [user], "tools": tools or []}


def test_responses_stream_carries_the_events_codex_reads(mock):
    server = mock({"text": "Codex hears you", "chunks": 2})
    reply = request(server, "/v1/responses", responses_body(), {"authorization": "Bearer sk-resp-secret"})
    data = reply.data()
    assert [e["event"] for e in reply.events] == [d["type"] for d in data]
    assert [d["type"] for d in data] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert "".join(d["delta"] for d in data if d["type"] == "response.output_text.delta") == "Codex hears you"
    item = data[-2]["item"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"][0] == {"type": "output_text", "text": "Codex hears you", "annotations": []}
    completed = data[-1]["response"]
    assert completed["id"] == data[0]["response"]["id"] and completed["status"] == "completed"
    usage = completed["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    [entry] = records(server)
    assert (entry["api"], entry["credential_header"]) == ("responses", "authorization")
    assert entry["credential_sha256"] == hashlib.sha256(b"sk-resp-secret").hexdigest()


def test_responses_function_call_then_text_after_function_call_output(mock):
    exec_command = {"name": "exec_command", "input": {"cmd": "echo hi > hello.txt"}}
    server = mock({"text": "wrote it", "tool": exec_command})
    data = request(server, "/v1/responses", responses_body(tools=RESPONSES_TOOLS)).data()
    kinds = [d["type"] for d in data]
    assert "response.output_text.delta" not in kinds and "response.function_call_arguments.done" in kinds
    item = next(d["item"] for d in data if d["type"] == "response.output_item.done")
    assert item["type"] == "function_call" and item["name"] == "exec_command"
    assert json.loads(item["arguments"]) == {"cmd": "echo hi > hello.txt"} and item["call_id"].startswith("call_")
    output = {"type": "function_call_output", "call_id": item["call_id"], "output": "exit 0"}
    again = request(server, "/v1/responses", responses_body(item, output, tools=RESPONSES_TOOLS)).data()
    final = next(d["item"] for d in again if d["type"] == "response.output_item.done")
    assert final["type"] == "message" and final["content"][0]["text"] == "wrote it"


def test_responses_without_stream_is_one_response_object(mock):
    server = mock({"text": "once"})
    response = request(server, "/v1/responses", {**responses_body(), "stream": False}).json()
    assert response["object"] == "response" and response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == "once" and response["usage"]["output_tokens"] == 6


def test_responses_error_uses_the_openai_envelope(mock):
    server = mock({"status": 400, "error_message": "bad input"})
    reply = request(server, "/v1/responses", responses_body())
    assert reply.status == 400 and reply.json()["error"]["message"] == "bad input"
    assert reply.json()["error"]["type"] == "invalid_request_error"


# -- script behaviour shared by every API -------------------------------------------------------

STREAMS = {
    "anthropic": ("/v1/messages", {"stream": True, "messages": []}),
    "chat": ("/v1/chat/completions", {"stream": True, "messages": []}),
    "gemini": (GEMINI_STREAM, gemini_body()),
    "responses": ("/v1/responses", responses_body()),
}


def delta_texts(api, reply):
    data = [d for d in reply.data() if d is not None]
    if api == "anthropic":
        return [d["delta"]["text"] for d in data if d["type"] == "content_block_delta"]
    if api == "chat":
        return [
            d["choices"][0]["delta"]["content"]
            for d in data
            if d["choices"] and d["choices"][0]["delta"].get("content")
        ]
    if api == "gemini":
        return [d["candidates"][0]["content"]["parts"][0]["text"] for d in data]
    return [d["delta"] for d in data if d["type"] == "response.output_text.delta"]


@pytest.mark.parametrize("api", sorted(STREAMS))
def test_a_slow_stream_is_sent_chunk_by_chunk(mock, api):
    server = mock({"text": "one two three four", "chunks": 4, "chunk_delay": 0.25})
    path, body = STREAMS[api]
    reply = request(server, path, body)
    assert delta_texts(api, reply) == ["one t", "wo th", "ree ", "four"]
    [answer] = answers(server)
    sent = [e["time"] for e in answer["events"] if e["delta"] is not None]
    assert len(sent) == 4 and answer["stream"] is True and "aborted" not in answer
    assert all(later - earlier >= 0.25 for earlier, later in itertools.pairwise(sent))
    first_delta = next(e for e in reply.events if e["received"] and delta_texts(api, Reply(200, {}, b"", [e])))
    assert first_delta["received"] < sent[-1], "the first chunk reached the client only after the last was sent"


@pytest.mark.parametrize("api", sorted(STREAMS))
def test_delay_before_answering(mock, api):
    server = mock({"text": "late", "delay": 1.2})
    path, body = STREAMS[api]
    reply = request(server, path, body)
    assert "".join(delta_texts(api, reply)) == "late"
    [entry], [answer] = records(server), answers(server)
    first = next(e["time"] for e in answer["events"] if e["delta"] is not None)
    assert first - entry["time"] >= 1.2
    pings = [e for e in answer["events"] if e["event"] == "ping"]
    assert (len(pings) >= 1) == (api == "anthropic"), "only Anthropic streams keep the connection alive with pings"


def test_delay_also_applies_to_errors_and_json_answers(mock):
    server = mock({"status": 500, "delay": 0.5})
    started = time.time()
    assert request(server, GEMINI_JSON, gemini_body()).status == 500
    assert time.time() - started >= 0.5


def test_an_api_section_overrides_the_top_level_for_that_api_only(mock):
    server = mock(
        {
            "text": "shared answer",
            "gemini": {"tool": WRITE},
            "responses": {"text": "codex answer"},
            "anthropic": {"status": 500},
        }
    )
    gem = request(server, GEMINI_STREAM, gemini_body(tools=GEMINI_TOOLS)).data()
    assert "functionCall" in gem[0]["candidates"][0]["content"]["parts"][0]
    assert delta_texts("responses", request(server, "/v1/responses", responses_body(tools=RESPONSES_TOOLS))) == [
        "codex answer"
    ]
    assert request(server, "/v1/messages", {"messages": []}).status == 500
    chat = request(server, "/v1/chat/completions", {"messages": [], "tools": CHAT_TOOLS}).json()
    assert chat["choices"][0]["message"]["content"] == "shared answer"


def test_tool_rounds_repeats_the_call_until_enough_results_came_back(mock):
    server = mock({"text": "finally", "tool": WRITE, "tool_rounds": 2})
    user = {"role": "user", "parts": [{"text": "go"}]}
    result = {"role": "user", "parts": [{"functionResponse": {"name": "write_file", "response": {}}}]}
    call = {"role": "model", "parts": [{"functionCall": {"name": "write_file", "args": {}}}]}
    one = request(server, GEMINI_JSON, gemini_body(user, tools=GEMINI_TOOLS)).json()
    two = request(server, GEMINI_JSON, gemini_body(user, call, result, tools=GEMINI_TOOLS)).json()
    three = request(server, GEMINI_JSON, gemini_body(user, call, result, call, result, tools=GEMINI_TOOLS)).json()
    parts = [r["candidates"][0]["content"]["parts"][0] for r in (one, two, three)]
    assert ["functionCall" in p for p in parts] == [True, True, False] and parts[2]["text"] == "finally"


def test_set_script_changes_a_running_server(mock):
    server = mock({"text": "before"})
    assert (
        request(server, GEMINI_JSON, gemini_body()).json()["candidates"][0]["content"]["parts"][0]["text"] == "before"
    )
    server.set_script({"status": 503})
    assert request(server, GEMINI_JSON, gemini_body()).status == 503
    with pytest.raises(ScriptError):
        server.set_script({"status": "soon"})
    assert request(server, GEMINI_JSON, gemini_body()).status == 503, "a rejected script must leave the old one"


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ({"txt": "typo"}, "unknown key(s) txt"),
        ({"status": 200}, "script.status must be an integer from 400 to 599"),
        ({"status": True}, "script.status"),
        ({"delay": -1}, "script.delay"),
        ({"chunks": 0}, "script.chunks"),
        ({"tool": {"name": "x"}}, "script.tool must be"),
        ({"tool": {"name": "x", "input": {}, "extra": 1}}, "script.tool must be"),
        ({"gemini": {"anthropic": {}}}, "script.gemini: unknown key(s) anthropic"),
        ({"gemini": []}, "script.gemini must be an object"),
        ({"text": 42}, "script.text must be a string"),
    ],
)
def test_an_invalid_script_is_refused_before_anything_listens(tmp_path, script, message):
    with pytest.raises(ScriptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_server("127.0.0.1", 0, tmp_path / "rec", script)


def test_a_script_that_is_not_an_object_is_refused(tmp_path):
    with pytest.raises(ScriptError, match="must be a JSON object"):
        make_server("127.0.0.1", 0, tmp_path / "rec", ["text"])


def first_tool_call(api, server):
    """(name, arguments) of the tool call each API's first turn asks for."""
    if api == "anthropic":
        block = request(server, "/v1/messages", {"tools": ANTHROPIC_TOOLS, "messages": []}).json()["content"][0]
        return block["name"], block["input"]
    if api == "chat":
        message = request(server, "/v1/chat/completions", {"tools": CHAT_TOOLS, "messages": []}).json()
        call = message["choices"][0]["message"]["tool_calls"][0]["function"]
        return call["name"], json.loads(call["arguments"])
    if api == "gemini":
        part = request(server, GEMINI_JSON, gemini_body(tools=GEMINI_TOOLS)).json()["candidates"][0]["content"]
        return part["parts"][0]["functionCall"]["name"], part["parts"][0]["functionCall"]["args"]
    response = request(server, "/v1/responses", {**responses_body(tools=RESPONSES_TOOLS), "stream": False}).json()
    return response["output"][0]["name"], json.loads(response["output"][0]["arguments"])


def test_presets_give_each_api_the_tool_its_cli_runs(mock, tmp_path):
    target = tmp_path / "it's a $(file).txt"
    server = mock(presets.write_file(str(target), "a 'b' `c`\n", "done"))
    calls = {api: first_tool_call(api, server) for api in STREAMS}
    assert calls["anthropic"] == ("Write", {"file_path": str(target), "content": "a 'b' `c`\n"})
    assert calls["chat"] == ("write", {"filePath": str(target), "content": "a 'b' `c`\n"})
    assert calls["gemini"] == ("write_file", {"file_path": str(target), "content": "a 'b' `c`\n"})
    name, arguments = calls["responses"]
    assert name == "exec_command" and set(arguments) == {"cmd"}
    subprocess.run(["bash", "-c", arguments["cmd"]], check=True, timeout=30, cwd=tmp_path)
    assert target.read_bytes() == b"a 'b' `c`\n", "the Codex shell command must write the content byte for byte"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["rec", target.name]), "nothing else may appear"
    server.set_script(presets.shell("echo hi", "ran"))
    shells = {api: first_tool_call(api, server) for api in STREAMS}
    assert {api: name for api, (name, _) in shells.items()} == {
        "anthropic": "Bash",
        "chat": "bash",
        "gemini": "run_shell_command",
        "responses": "exec_command",
    }
    assert shells["responses"][1] == {"cmd": "echo hi"} and shells["gemini"][1]["command"] == "echo hi"


def test_write_file_preset_refuses_a_relative_path():
    with pytest.raises(ValueError, match="absolute path"):
        presets.write_file("hello.txt", "x")


# -- the record ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "where", "secret"),
    [
        ({"x-api-key": "sk-ant-SECRET1"}, "x-api-key", "sk-ant-SECRET1"),
        ({"authorization": "Bearer sk-SECRET2"}, "authorization", "sk-SECRET2"),
        ({"x-goog-api-key": "AIzaSECRET3"}, "x-goog-api-key", "AIzaSECRET3"),
        ({}, None, None),
    ],
)
def test_requests_are_recorded_with_header_names_and_a_credential_hash_only(mock, headers, where, secret):
    server = mock({})
    request(server, "/v1/responses", {**responses_body(), "stream": False}, {**headers, "x-custom": "v"})
    [entry] = records(server)
    assert entry["method"] == "POST" and entry["seq"] == 1
    assert {"content-type", "x-custom", *headers} <= set(entry["headers"])
    assert (entry["credential_present"], entry["credential_header"]) == (secret is not None, where)
    assert entry["credential_sha256"] == (hashlib.sha256(secret.encode()).hexdigest() if secret else None)
    if secret:
        assert secret not in (server.state.record_dir / "requests.jsonl").read_text()
        assert secret not in (server.state.record_dir / "responses.jsonl").read_text()


def test_a_non_bearer_authorization_is_not_taken_for_a_credential(mock):
    server = mock({})
    request(server, "/v1/chat/completions", {"messages": []}, {"authorization": "Basic dXNlcjpwYXNz"})
    [entry] = records(server)
    assert entry["credential_present"] is False and "dXNlcjpwYXNz" not in json.dumps(entry)


def test_odd_bodies_are_recorded_not_fatal(mock):
    server = mock({"text": "still here"})
    assert request(server, "/v1/chat/completions", raw=b"{not json").status == 200
    assert request(server, "/v1/chat/completions", raw=b"[1, 2]").status == 200
    too_big = request(server, "/v1/chat/completions", headers={"content-length": str(65 * 1024 * 1024)}, raw=b"")
    assert too_big.status == 413
    bodies = [r["body"] for r in records(server)]
    assert bodies[0] == {"_unparsed": "{not json"} and bodies[1] == {"_unparsed": [1, 2]}
    assert "larger than" in bodies[2]["_unparsed"]
    assert request(server, "/v1/nothing-here", {}).status == 404


def test_a_chunked_request_body_is_read(mock):
    server = mock({})
    body = json.dumps(gemini_body()).encode()
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as sock:
        head = f"POST {GEMINI_JSON} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        sock.sendall(head.encode() + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert records(server)[0]["body"] == gemini_body()


def test_a_client_that_leaves_mid_stream_is_recorded_as_aborted(mock):
    server = mock({"text": "abcdefgh", "chunks": 8, "chunk_delay": 0.2})
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as sock:
        data = json.dumps(gemini_body()).encode()
        sock.sendall(f"POST {GEMINI_STREAM} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        seen = b""
        while b"data: " not in seen:
            seen += sock.recv(4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    deadline = time.monotonic() + 10
    while not (server.state.record_dir / "responses.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    [answer] = answers(server)
    assert answer["aborted"] is True and len(answer["events"]) < 8


# -- the command line ---------------------------------------------------------------------------


def test_command_line_serves_and_refuses_a_bad_script(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"status": "later"}')
    refused = subprocess.run(
        [sys.executable, str(MOCK_SCRIPT), "--record", str(tmp_path / "r1"), "--script", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and "script.status" in refused.stderr
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"text": "from the command line"}))
    proc = subprocess.Popen(
        [sys.executable, str(MOCK_SCRIPT), "--record", str(tmp_path / "r2"), "--script", str(good)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", GEMINI_JSON, body=json.dumps(gemini_body()))
        parts = json.loads(conn.getresponse().read())["candidates"][0]["content"]["parts"]
        assert parts == [{"text": "from the command line"}]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
