"""Reading the agent's stdout (fetched from the VM, so hostile): one parser per output format.

Each parser reads the file line by line (bounded: long lines are skipped) and returns a ``Parsed`` whose
fields are coerced to the types the record needs; a field of the wrong type is dropped, never trusted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_LINE = 16 * 1024 * 1024
MAX_DOCUMENT = 64 * 1024 * 1024
MAX_TEXT = 1024 * 1024  # result_text in the record
MAX_RAW = 16 * 1024 * 1024  # bytes of events kept for agent-output.json


@dataclass
class Parsed:
    result_text: str | None = None
    usage: dict[str, Any] | None = None
    cost: dict[str, float] | None = None
    model: str | None = None
    is_error: bool = False
    error: str | None = None  # the agent's own words about what failed
    raw: Any = None  # the agent's machine-readable output, for agent-output.json
    warnings: list[dict[str, str]] = field(default_factory=list)


def _str(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _text(value: Any, parsed: Parsed) -> str | None:
    if not isinstance(value, str):
        return None
    if len(value) > MAX_TEXT:
        parsed.warnings.append(
            {"code": "result_text_truncated", "path": "stdout.log", "message": f"result_text cut to {MAX_TEXT} chars"}
        )
        return value[:MAX_TEXT]
    return value


def lines(path: Path) -> Iterator[bytes]:
    """The file's lines, skipping any longer than MAX_LINE (read in bounded pieces)."""
    try:
        fh = path.open("rb")
    except OSError:
        return
    with fh:
        while True:
            line = fh.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                while line and not line.endswith(b"\n"):
                    line = fh.readline(MAX_LINE + 1)
                continue
            yield line


def json_lines(path: Path) -> Iterator[tuple[dict[str, Any], int]]:
    """The JSON objects of a JSONL file, each with the size of its line."""
    for line in lines(path):
        stripped = line.strip()
        if not stripped.startswith(b"{"):
            continue
        try:
            event = json.loads(stripped)
        except (ValueError, RecursionError):
            continue
        if isinstance(event, dict):
            yield event, len(stripped)


class _Kept:
    """Events kept for agent-output.json, up to MAX_RAW bytes of them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.size = 0

    def add(self, event: dict[str, Any], size: int) -> None:
        if self.size + size <= MAX_RAW:
            self.events.append(event)
            self.size += size


def parse_claude_stream_json(path: Path) -> Parsed:
    parsed = Parsed()
    result: dict[str, Any] | None = None
    for event, _size in json_lines(path):
        if event.get("type") == "system" and event.get("subtype") == "init" and parsed.model is None:
            parsed.model = _str(event.get("model"))
        elif event.get("type") == "result":
            result = event
    if result is None:
        parsed.is_error = True
        parsed.error = "Claude Code printed no result event"
        return parsed
    parsed.result_text = _text(result.get("result"), parsed)
    parsed.usage = _dict(result.get("usage"))
    cost = result.get("total_cost_usd")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        parsed.cost = {"usd": float(cost)}
    parsed.is_error = result.get("is_error") is True or str(result.get("subtype", "")).startswith("error")
    if parsed.is_error:
        parsed.error = _str(result.get("result"), 2000) or _str(result.get("subtype"))
    parsed.raw = result
    return parsed


def parse_gemini_json(path: Path) -> Parsed:
    parsed = Parsed()
    try:
        if path.stat().st_size > MAX_DOCUMENT:
            parsed.is_error, parsed.error = True, "the agent's JSON output is larger than 64 MiB"
            return parsed
        doc = json.loads(path.read_bytes() or b"null")
    except (OSError, ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        parsed.is_error, parsed.error = True, "Gemini CLI printed no JSON result"
        return parsed
    parsed.result_text = _text(doc.get("response"), parsed)
    stats = _dict(doc.get("stats"))
    parsed.usage = stats
    models = _dict((stats or {}).get("models"))
    if models:
        parsed.model = _str(next(iter(models)))
    error = doc.get("error")
    if error:
        parsed.is_error = True
        parsed.error = (
            _str((_dict(error) or {}).get("message"), 2000) or _str(error, 2000) or "Gemini CLI reported an error"
        )
    parsed.raw = doc
    return parsed


def parse_codex_jsonl(path: Path) -> Parsed:
    parsed = Parsed()
    kept = _Kept()
    for event, size in json_lines(path):
        kept.add(event, size)
        kind = event.get("type")
        item = _dict(event.get("item")) or {}
        if kind == "item.completed" and item.get("type") == "agent_message":
            parsed.result_text = _text(item.get("text"), parsed) or parsed.result_text
        elif kind == "turn.completed":
            parsed.usage = _dict(event.get("usage")) or parsed.usage
        elif kind in ("turn.failed", "error"):
            parsed.is_error = True
            detail = _dict(event.get("error")) or event
            parsed.error = _str(detail.get("message"), 2000) or parsed.error or str(kind)
    parsed.raw = kept.events or None
    return parsed


def parse_opencode_jsonl(path: Path) -> Parsed:
    parsed = Parsed()
    kept = _Kept()
    texts: list[str] = []
    length = 0
    for event, size in json_lines(path):
        kept.add(event, size)
        part = _dict(event.get("part")) or {}
        if event.get("type") == "text" and isinstance(part.get("text"), str) and length <= MAX_TEXT:
            texts.append(part["text"])
            length += len(part["text"])
        elif event.get("type") == "error":
            parsed.is_error = True
            detail = _dict(event.get("error")) or {}
            data = _dict(detail.get("data")) or {}
            parsed.error = _str(data.get("message"), 2000) or _str(detail.get("name")) or "opencode reported an error"
    parsed.result_text = _text("".join(texts), parsed) or None
    parsed.raw = kept.events or None
    return parsed


def parse_text(path: Path) -> Parsed:
    parsed = Parsed()
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_TEXT + 1)
    except OSError:
        return parsed
    parsed.result_text = _text(data.decode("utf-8", "replace").strip(), parsed) or None
    return parsed


PARSERS: dict[str, Callable[[Path], Parsed]] = {
    "claude_stream_json": parse_claude_stream_json,
    "gemini_json": parse_gemini_json,
    "codex_jsonl": parse_codex_jsonl,
    "opencode_jsonl": parse_opencode_jsonl,
    "text": parse_text,
}
