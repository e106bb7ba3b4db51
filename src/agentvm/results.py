"""Turn what came back from the VM into the normalised result record (schemas/result.schema.json)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "result.schema.json"

Parsed = dict[str, Any]  # result_text, usage, cost, model, is_error, raw (the agent's machine-readable output)


def _json_lines(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def parse_claude_stream_json(stdout: str) -> Parsed:
    events = _json_lines(stdout)
    result = next((e for e in reversed(events) if e.get("type") == "result"), None)
    init = next((e for e in events if e.get("type") == "system" and e.get("subtype") == "init"), {})
    if result is None:
        return {"result_text": None, "raw": None, "model": init.get("model"), "is_error": True}
    return {
        "result_text": result.get("result"),
        "usage": result.get("usage"),
        "cost": {"usd": result["total_cost_usd"]} if isinstance(result.get("total_cost_usd"), int | float) else None,
        "model": init.get("model"),
        "is_error": bool(result.get("is_error")),
        "raw": result,
    }


def parse_gemini_json(stdout: str) -> Parsed:
    try:
        doc = json.loads(stdout)
    except ValueError:
        return {"result_text": None, "raw": None, "is_error": True}
    return {
        "result_text": doc.get("response"),
        "usage": doc.get("stats"),
        "is_error": bool(doc.get("error")),
        "raw": doc,
    }


def parse_codex_jsonl(stdout: str) -> Parsed:
    events = _json_lines(stdout)
    texts = [
        e["item"].get("text")
        for e in events
        if e.get("type") == "item.completed"
        and isinstance(e.get("item"), dict)
        and e["item"].get("type") == "agent_message"
    ]
    usage = next((e.get("usage") for e in reversed(events) if e.get("type") == "turn.completed"), None)
    failed = any(e.get("type") in ("turn.failed", "error") for e in events)
    return {"result_text": texts[-1] if texts else None, "usage": usage, "is_error": failed, "raw": events or None}


def parse_opencode_jsonl(stdout: str) -> Parsed:
    events = _json_lines(stdout)
    texts = [
        e["part"]["text"]
        for e in events
        if e.get("type") == "text" and isinstance(e.get("part"), dict) and e["part"].get("text")
    ]
    failed = any(e.get("type") == "error" for e in events)
    return {"result_text": "".join(texts) or None, "is_error": failed, "raw": events or None}


def parse_text(stdout: str) -> Parsed:
    return {"result_text": stdout.strip() or None, "is_error": False, "raw": None}


PARSERS: dict[str, Callable[[str], Parsed]] = {
    "claude_stream_json": parse_claude_stream_json,
    "gemini_json": parse_gemini_json,
    "codex_jsonl": parse_codex_jsonl,
    "opencode_jsonl": parse_opencode_jsonl,
    "text": parse_text,
}


def prompt_digest(prompt: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(prompt).hexdigest(), "bytes": len(prompt)}


def validate(record: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when the record does not follow the contract."""
    import jsonschema

    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(record)
