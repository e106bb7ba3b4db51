"""The OpenAI Responses API (Codex): ``POST /v1/responses``, streamed (``response.created``,
``response.output_item.added``, ``response.output_text.delta`` …, ``response.output_item.done``,
``response.completed`` with usage) or one ``response`` object. A tool call is a ``function_call`` output
item; the client answers it with a ``function_call_output`` input item in its next request."""

from __future__ import annotations

import json
import time
from typing import Any

from simulator.mocks.events import Event, as_dict, as_list, new_id
from simulator.mocks.openai_chat import error as chat_error
from simulator.mocks.script import Plan

API = "responses"


def declares_tools(body: dict[str, Any]) -> bool:
    return bool(as_list(body.get("tools")))


def tool_results(body: dict[str, Any]) -> int:
    return sum(1 for item in as_list(body.get("input")) if as_dict(item).get("type") == "function_call_output")


def error(status: int, message: str) -> dict[str, Any]:
    return chat_error(status, message)


def _usage(body: dict[str, Any]) -> dict[str, Any]:
    prompt = max(1, len(json.dumps(body.get("input", []))) // 4)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 6,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + 6,
    }


def _response(body: dict[str, Any], response_id: str, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    response = {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body.get("model", "mock-model"),
        "output": output,
        "usage": _usage(body) if status == "completed" else None,
    }
    return response


def _items(plan: Plan, body: dict[str, Any]) -> list[dict[str, Any]]:
    if plan.wants_tool(declares_tools(body), tool_results(body)):
        assert plan.tool is not None
        arguments = json.dumps(plan.tool["input"], ensure_ascii=False)
        call = {"type": "function_call", "id": new_id("fc_"), "call_id": new_id("call_"), "status": "completed"}
        return [{**call, "name": plan.tool["name"], "arguments": arguments}]
    content = [{"type": "output_text", "text": plan.text, "annotations": []}]
    return [{"type": "message", "id": new_id("msg_"), "status": "completed", "role": "assistant", "content": content}]


def message(plan: Plan, body: dict[str, Any]) -> dict[str, Any]:
    return _response(body, new_id("resp_"), "completed", _items(plan, body))


class _Stream:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, kind: str, fields: dict[str, Any], text: str | None = None) -> None:
        """Append a ``kind`` event; ``text`` marks it as carrying that much of the answer."""
        self.events.append(Event({"type": kind, "sequence_number": len(self.events), **fields}, kind, text))


def stream(plan: Plan, body: dict[str, Any]) -> list[Event]:
    response_id, out = new_id("resp_"), _Stream()
    out.add("response.created", {"response": _response(body, response_id, "in_progress", [])})
    out.add("response.in_progress", {"response": _response(body, response_id, "in_progress", [])})
    [item] = _items(plan, body)
    if item["type"] == "function_call":
        at = {"output_index": 0, "item_id": item["id"]}
        out.add(
            "response.output_item.added",
            {"output_index": 0, "item": {**item, "arguments": "", "status": "in_progress"}},
        )
        out.add("response.function_call_arguments.delta", {**at, "delta": item["arguments"]})
        out.add("response.function_call_arguments.done", {**at, "arguments": item["arguments"]})
    else:
        part = {"type": "output_text", "text": "", "annotations": []}
        at = {"output_index": 0, "item_id": item["id"], "content_index": 0}
        out.add(
            "response.output_item.added", {"output_index": 0, "item": {**item, "content": [], "status": "in_progress"}}
        )
        out.add("response.content_part.added", {**at, "part": part})
        for piece in plan.pieces():
            out.add("response.output_text.delta", {**at, "delta": piece}, piece)
        out.add("response.output_text.done", {**at, "text": plan.text})
        out.add("response.content_part.done", {**at, "part": {**part, "text": plan.text}})
    out.add("response.output_item.done", {"output_index": 0, "item": item})
    out.add("response.completed", {"response": _response(body, response_id, "completed", [item])})
    return out.events
