"""The Gemini API (Gemini CLI): ``POST /v1beta/models/<model>:streamGenerateContent?alt=sse`` (SSE ``data:``
chunks, the last one carrying ``finishReason`` and ``usageMetadata``), ``…:generateContent`` (one JSON
object), ``…:countTokens``, ``GET /v1beta/models``. Tool calls are ``functionCall`` parts; the CLI answers
them with ``functionResponse`` parts in its next request."""

from __future__ import annotations

import json
import re
from typing import Any

from simulator.mocks.events import Event, as_dict, as_list, new_id
from simulator.mocks.script import Plan

API = "gemini"
# /v1beta/models/<model>:<method> (also /v1/…); the model name is data from the client, kept only for echoing.
PATH = re.compile(r"^/v1(?:beta|alpha)?/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")
MODEL_LIST = re.compile(r"^/v1(?:beta|alpha)/models/?$")  # plain /v1/models is OpenAI's
METHODS = ("streamGenerateContent", "generateContent", "countTokens")
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def route(path: str) -> tuple[str, str] | None:
    """``(model, method)`` for a Gemini model path, else None."""
    match = PATH.match(path)
    return (match["model"], match["method"]) if match and match["method"] in METHODS else None


def declares_tools(body: dict[str, Any]) -> bool:
    return any(as_list(as_dict(tool).get("functionDeclarations")) for tool in as_list(body.get("tools")))


def tool_results(body: dict[str, Any]) -> int:
    return sum(
        1
        for content in as_list(body.get("contents"))
        for part in as_list(as_dict(content).get("parts"))
        if "functionResponse" in as_dict(part)
    )


def error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}}


def models() -> dict[str, Any]:
    methods = ["generateContent", "streamGenerateContent", "countTokens"]
    return {"models": [{"name": "models/gemini-mock", "displayName": "mock", "supportedGenerationMethods": methods}]}


def count_tokens(body: dict[str, Any]) -> dict[str, Any]:
    return {"totalTokens": max(1, len(json.dumps(body)) // 4)}


def _usage(body: dict[str, Any]) -> dict[str, int]:
    prompt = max(1, len(json.dumps(body.get("contents", []))) // 4)
    return {"promptTokenCount": prompt, "candidatesTokenCount": 6, "totalTokenCount": prompt + 6}


def _response(model: str, response_id: str, parts: list[dict[str, Any]], final: dict[str, Any] | None) -> dict:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": response_id}
    if final is not None:
        candidate["finishReason"] = "STOP"
        chunk["usageMetadata"] = final
    return chunk


def _call(plan: Plan) -> dict[str, Any]:
    assert plan.tool is not None
    return {"functionCall": {"name": plan.tool["name"], "args": plan.tool["input"]}}


def stream(plan: Plan, body: dict[str, Any], model: str) -> list[Event]:
    response_id, usage = new_id("resp-"), _usage(body)
    if plan.wants_tool(declares_tools(body), tool_results(body)):
        return [Event(_response(model, response_id, [_call(plan)], usage))]
    pieces = plan.pieces()
    return [
        Event(_response(model, response_id, [{"text": p}], usage if i == len(pieces) - 1 else None), delta=p)
        for i, p in enumerate(pieces)
    ]


def message(plan: Plan, body: dict[str, Any], model: str) -> dict[str, Any]:
    parts = [_call(plan)] if plan.wants_tool(declares_tools(body), tool_results(body)) else [{"text": plan.text}]
    return _response(model, new_id("resp-"), parts, _usage(body))
