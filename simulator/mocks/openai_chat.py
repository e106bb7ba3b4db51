"""OpenAI Chat Completions (opencode, Crush): ``POST /v1/chat/completions``, SSE ``data:`` chunks ending with
``[DONE]``, or one ``chat.completion`` object; ``GET /v1/models``."""

from __future__ import annotations

import json
import time
from typing import Any

from simulator.mocks.events import Event, as_dict, as_list, new_id
from simulator.mocks.script import Plan

API = "chat"
USAGE = {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}


def declares_tools(body: dict[str, Any]) -> bool:
    return bool(as_list(body.get("tools")) or as_list(body.get("functions")))


def tool_results(body: dict[str, Any]) -> int:
    return sum(1 for message in as_list(body.get("messages")) if as_dict(message).get("role") in ("tool", "function"))


def error(status: int, message: str) -> dict[str, Any]:
    kinds = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error"}
    kinds |= {404: "not_found_error", 429: "rate_limit_exceeded"}
    codes = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
    return {
        "error": {
            "message": message,
            "type": kinds.get(status, "server_error"),
            "param": None,
            "code": codes.get(status),
        }
    }


def models() -> dict[str, Any]:
    return {"object": "list", "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]}


def _call(plan: Plan) -> dict[str, Any]:
    assert plan.tool is not None
    arguments = json.dumps(plan.tool["input"], ensure_ascii=False)
    return {"id": new_id("call_"), "type": "function", "function": {"name": plan.tool["name"], "arguments": arguments}}


def _chunk(chunk_id: str, model: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        **extra,
    }


def stream(plan: Plan, body: dict[str, Any]) -> list[Event]:
    model, chunk_id = str(body.get("model", "mock-model")), new_id("chatcmpl-")

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "finish_reason": finish}]

    events = [Event(_chunk(chunk_id, model, choice({"role": "assistant", "content": ""})))]
    if plan.wants_tool(declares_tools(body), tool_results(body)):
        events.append(Event(_chunk(chunk_id, model, choice({"tool_calls": [{"index": 0, **_call(plan)}]}))))
        finish = "tool_calls"
    else:
        events += [Event(_chunk(chunk_id, model, choice({"content": p})), delta=p) for p in plan.pieces()]
        finish = "stop"
    events.append(Event(_chunk(chunk_id, model, choice({}, finish))))
    events.append(Event(_chunk(chunk_id, model, [], usage=USAGE)))
    events.append(Event("[DONE]"))
    return events


def message(plan: Plan, body: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = {"role": "assistant", "content": plan.text}
    finish = "stop"
    if plan.wants_tool(declares_tools(body), tool_results(body)):
        reply, finish = {"role": "assistant", "content": None, "tool_calls": [_call(plan)]}, "tool_calls"
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "mock-model"),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish}],
        "usage": USAGE,
    }
