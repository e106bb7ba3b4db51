"""Reading the agent's stdout (fetched from the VM, so hostile): one parser per output format.

Each parser reads stdout line by line (bounded: long lines are skipped), and the end of stderr where an agent
prints its error only there, and returns a ``Parsed`` whose fields are coerced to the types the record
needs; a field of the wrong type is dropped, never trusted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentvm.run.readout import (
    MAX_DOCUMENT,
    MAX_TEXT,
    Kept,
    Parsed,
    as_dict,
    as_str,
    as_text,
    error_message,
    json_lines,
    last_json_document,
    last_line,
    tail,
)

__all__ = ["MAX_TEXT", "PARSERS", "Parsed"]


def parse_claude_stream_json(path: Path, _stderr: Path | None = None) -> Parsed:
    parsed = Parsed()
    result: dict[str, Any] | None = None
    for event, _size in json_lines(path):
        if event.get("type") == "system" and event.get("subtype") == "init" and parsed.model is None:
            parsed.model = as_str(event.get("model"))
        elif event.get("type") == "result":
            result = event
    if result is None:
        parsed.is_error = True
        parsed.error = "Claude Code printed no result event"
        return parsed
    parsed.result_text = as_text(result.get("result"), parsed)
    parsed.usage = as_dict(result.get("usage"))
    cost = result.get("total_cost_usd")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        parsed.cost = {"usd": float(cost)}
    parsed.is_error = result.get("is_error") is True or str(result.get("subtype", "")).startswith("error")
    if parsed.is_error:
        parsed.error = as_str(result.get("result"), 2000) or as_str(result.get("subtype"))
    parsed.raw = result
    return parsed


def _gemini_model(stats: dict[str, Any] | None) -> str | None:
    models = as_dict((stats or {}).get("models"))
    return as_str(next(iter(models))) if models else None


def parse_gemini_json(path: Path, stderr: Path | None = None) -> Parsed:
    """Gemini CLI's ``-o json``: one document on stdout; on an error stdout is empty and the document (with
    ``error``) ends stderr, after a stack trace."""
    parsed = Parsed()
    try:
        if path.stat().st_size > MAX_DOCUMENT:
            parsed.is_error, parsed.error = True, "the agent's JSON output is larger than 64 MiB"
            return parsed
        doc = json.loads(path.read_bytes() or b"null")
    except (OSError, ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        doc = last_json_document(tail(stderr))
    if not isinstance(doc, dict):
        parsed.is_error = True
        parsed.error = last_line(tail(stderr)) or "Gemini CLI printed no JSON result"
        return parsed
    parsed.result_text = as_text(doc.get("response"), parsed)
    parsed.usage = as_dict(doc.get("stats"))
    parsed.model = _gemini_model(parsed.usage)
    error = doc.get("error")
    if error:
        parsed.is_error = True
        parsed.error = error_message(error) or "Gemini CLI reported an error"
    parsed.raw = doc
    return parsed


def parse_gemini_stream_json(path: Path, stderr: Path | None = None) -> Parsed:
    """Gemini CLI's ``-o stream-json``: ``init{model}``, ``message`` (assistant text in ``delta`` pieces),
    ``tool_use``/``tool_result``, and last ``result{status, error, stats}``."""
    parsed = Parsed()
    kept = Kept()
    texts: list[str] = []
    length = 0
    result: dict[str, Any] | None = None
    for event, size in json_lines(path):
        kept.add(event, size)
        kind = event.get("type")
        if kind == "init" and parsed.model is None:
            parsed.model = as_str(event.get("model"))
        elif kind == "message" and event.get("role") == "assistant" and isinstance(event.get("content"), str):
            if length <= MAX_TEXT:
                texts.append(event["content"])
                length += len(event["content"])
        elif kind == "result":
            result = event
    parsed.result_text = as_text("".join(texts), parsed) or None
    parsed.raw = kept.events or None
    if result is None:
        parsed.is_error = True
        doc = last_json_document(tail(stderr))
        parsed.error = (
            error_message((doc or {}).get("error")) or last_line(tail(stderr)) or "Gemini CLI printed no result event"
        )
        return parsed
    parsed.usage = as_dict(result.get("stats"))
    parsed.model = parsed.model or _gemini_model(parsed.usage)
    if result.get("status") != "success" or result.get("error"):
        parsed.is_error = True
        parsed.error = error_message(result.get("error")) or f"Gemini CLI ended with status {result.get('status')!r}"
    return parsed


def parse_codex_jsonl(path: Path, _stderr: Path | None = None) -> Parsed:
    """Codex's ``exec --json``: ``item.completed`` items (``agent_message`` text; ``error`` items are warnings),
    ``turn.completed{usage}``, or ``error{message}`` then ``turn.failed{error{message}}``."""
    parsed = Parsed()
    kept = Kept()
    completed = failed = False
    last_error: str | None = None
    for event, size in json_lines(path):
        kept.add(event, size)
        kind = event.get("type")
        item = as_dict(event.get("item")) or {}
        if kind == "item.completed" and item.get("type") == "agent_message":
            parsed.result_text = as_text(item.get("text"), parsed) or parsed.result_text
        elif kind == "turn.completed":
            completed = True
            parsed.usage = as_dict(event.get("usage")) or parsed.usage
        elif kind == "turn.failed":
            failed = True
            last_error = error_message(event.get("error")) or last_error
        elif kind == "error":
            last_error = as_str(event.get("message"), 2000) or last_error
    parsed.raw = kept.events or None
    if failed or not completed:
        parsed.is_error = True
        parsed.error = last_error or ("Codex reported a failed turn" if failed else "Codex printed no completed turn")
    return parsed


def parse_opencode_jsonl(path: Path, _stderr: Path | None = None) -> Parsed:
    parsed = Parsed()
    kept = Kept()
    texts: list[str] = []
    length = 0
    for event, size in json_lines(path):
        kept.add(event, size)
        part = as_dict(event.get("part")) or {}
        if event.get("type") == "text" and isinstance(part.get("text"), str) and length <= MAX_TEXT:
            texts.append(part["text"])
            length += len(part["text"])
        elif event.get("type") == "error":
            parsed.is_error = True
            detail = as_dict(event.get("error")) or {}
            data = as_dict(detail.get("data")) or {}
            parsed.error = (
                as_str(data.get("message"), 2000) or as_str(detail.get("name")) or "opencode reported an error"
            )
    parsed.result_text = as_text("".join(texts), parsed) or None
    parsed.raw = kept.events or None
    return parsed


def parse_text(path: Path, _stderr: Path | None = None) -> Parsed:
    parsed = Parsed()
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_TEXT + 1)
    except OSError:
        return parsed
    parsed.result_text = as_text(data.decode("utf-8", "replace").strip(), parsed) or None
    return parsed


PARSERS: dict[str, Callable[[Path, Path | None], Parsed]] = {
    "claude_stream_json": parse_claude_stream_json,
    "gemini_json": parse_gemini_json,
    "gemini_stream_json": parse_gemini_stream_json,
    "codex_jsonl": parse_codex_jsonl,
    "opencode_jsonl": parse_opencode_jsonl,
    "text": parse_text,
}
