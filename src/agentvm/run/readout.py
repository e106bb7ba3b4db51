"""Bounded, defensive reading of what an agent printed in the VM (hostile): the ``Parsed`` result, its
coercions (a value of the wrong type is dropped, never trusted), JSON lines, the end of stderr."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_LINE = 16 * 1024 * 1024
MAX_DOCUMENT = 64 * 1024 * 1024
MAX_TEXT = 1024 * 1024  # result_text in the record
MAX_RAW = 16 * 1024 * 1024  # bytes of events kept for agent-output.json
STDERR_TAIL = 64 * 1024  # bytes of stderr read for an error the agent printed only there


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


def as_str(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def as_dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def as_text(value: Any, parsed: Parsed) -> str | None:
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


class Kept:
    """Events kept for agent-output.json, up to MAX_RAW bytes of them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.size = 0

    def add(self, event: dict[str, Any], size: int) -> None:
        if self.size + size <= MAX_RAW:
            self.events.append(event)
            self.size += size


def tail(path: Path | None, size: int = STDERR_TAIL) -> str:
    """The last ``size`` bytes of a file, as text ('' when absent)."""
    if path is None:
        return ""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def last_json_document(text: str) -> dict[str, Any] | None:
    """The last JSON object of ``text`` that starts at the beginning of a line and runs to its end."""
    lines_ = text.splitlines()
    for index in range(len(lines_) - 1, -1, -1):
        if not lines_[index].startswith("{"):
            continue
        try:
            doc = json.loads("\n".join(lines_[index:]))
        except (ValueError, RecursionError):
            continue
        return doc if isinstance(doc, dict) else None
    return None


def error_message(error: Any) -> str | None:
    return as_str((as_dict(error) or {}).get("message"), 2000) or as_str(error, 2000)


def last_line(text: str) -> str | None:
    """The last line of an agent's stderr that is not a stack frame (bounded)."""
    for line in reversed(text.splitlines()):
        stripped = line.strip()
        if stripped and not stripped.startswith("at ") and stripped not in ("}", "{"):
            return stripped[:2000]
    return None
