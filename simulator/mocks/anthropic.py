"""Anthropic Messages (Claude Code): ``POST /v1/messages``, streamed (``message_start`` … ``message_stop``) or not."""

from __future__ import annotations

import json
from typing import Any

from simulator.mocks.events import Event, as_dict, as_list, new_id
from simulator.mocks.script import Plan

API = "anthropic"


def declares_tools(body: dict[str, Any]) -> bool:
    return bool(as_list(body.get("tools")))


def tool_results(body: dict[str, Any]) -> int:
    return sum(
        1
        for message in as_list(body.get("messages"))
        for block in as_list(as_dict(message).get("content"))
        if as_dict(block).get("type") == "tool_result"
    )


def error(status: int, message: str) -> dict[str, Any]:
    kinds = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
    kinds |= {413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}
    return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}


def _tool_block(plan: Plan) -> dict[str, Any]:
    assert plan.tool is not None
    return {"type": "tool_use", "id": new_id("toolu_"), "name": plan.tool["name"], "input": plan.tool["input"]}


def _usage(output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": 25,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def message(plan: Plan, body: dict[str, Any]) -> dict[str, Any]:
    if plan.wants_tool(declares_tools(body), tool_results(body)):
        content, stop = [_tool_block(plan)], "tool_use"
    else:
        content, stop = [{"type": "text", "text": plan.text}], "end_turn"
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-mock"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": _usage(6),
    }


def stream(plan: Plan, body: dict[str, Any]) -> list[Event]:
    start = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-mock"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(1),
    }
    events = [Event({"type": "message_start", "message": start}, "message_start")]
    if plan.wants_tool(declares_tools(body), tool_results(body)):
        block = _tool_block(plan)
        first = {**block, "input": {}}
        deltas = [Event(_delta({"type": "input_json_delta", "partial_json": json.dumps(block["input"])}))]
        stop = "tool_use"
    else:
        first = {"type": "text", "text": ""}
        deltas = [Event(_delta({"type": "text_delta", "text": piece}), delta=piece) for piece in plan.pieces()]
        stop = "end_turn"
    events.append(Event({"type": "content_block_start", "index": 0, "content_block": first}, "content_block_start"))
    events.append(Event({"type": "ping"}, "ping"))
    events += [Event(event.data, "content_block_delta", event.delta) for event in deltas]
    events.append(Event({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    events.append(
        Event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 6},
            },
            "message_delta",
        )
    )
    events.append(Event({"type": "message_stop"}, "message_stop"))
    return events


def _delta(delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": delta}
