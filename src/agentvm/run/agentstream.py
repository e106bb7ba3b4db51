"""Follows the agent's streamed output while it runs (``multipass exec … tail -F stdout.log``) and prints one
short line per event. Everything read is hostile: any line may be malformed, huge or full of escape codes;
the pump never dies of it and never prints more than a line per event."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from agentvm import textsafe
from agentvm.multipass import Multipass, MultipassError

MAX_LINE = 1024 * 1024


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _claude(event: dict[str, Any]) -> str | None:
    kind = event.get("type")
    if kind == "assistant":
        parts = []
        message = event.get("message") if isinstance(event.get("message"), dict) else {}
        blocks = message.get("content") if isinstance(message.get("content"), list) else []
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and _text(block.get("text")).strip():
                parts.append("says: " + textsafe.one_line(block["text"], 100))
            elif block.get("type") == "tool_use":
                parts.append(f"uses {textsafe.one_line(_text(block.get('name')) or '?', 60)}")
        return "; ".join(parts) or None
    if kind == "system" and event.get("subtype") == "init":
        return f"started (model {textsafe.one_line(_text(event.get('model')) or '?', 80)})"
    if kind == "result":
        return f"finished: {textsafe.one_line(_text(event.get('subtype')) or '?', 60)}"
    return None


def _jsonl(event: dict[str, Any]) -> str | None:
    kind = _text(event.get("type"))
    if kind in ("tool_use", "item.started"):
        item = event.get("item") if isinstance(event.get("item"), dict) else event
        name = _text(item.get("tool_name")) or _text(item.get("type")) or _text(item.get("command"))
        return f"uses {textsafe.one_line(name, 60)}" if name else kind
    if kind in ("item.completed", "text", "message", "result", "error", "turn.failed", "turn.completed", "init"):
        return kind
    return None


def describe_event(event: Any) -> str | None:
    """One short line for a streamed agent event (Claude Code stream-json; Gemini, Codex, opencode JSONL)."""
    if not isinstance(event, dict):
        return None
    return _claude(event) or _jsonl(event)


def describe_line(line: bytes) -> str | None:
    if len(line) > MAX_LINE or not line.lstrip().startswith(b"{"):
        return None
    try:
        return describe_event(json.loads(line))
    except (ValueError, RecursionError):
        return None


class AgentStream:
    """``multipass exec -n INSTANCE -- tail -n +1 -F PATH``, summarised to ``say`` until ``stop()``."""

    def __init__(self, mp: Multipass, instance: str, path: str, say: Callable[[str], None]) -> None:
        self.say = say
        self.proc: subprocess.Popen[bytes] | None = None
        with contextlib.suppress(MultipassError, OSError):
            self.proc = mp.stream(instance, ["tail", "-n", "+1", "-F", path])
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        if self.proc is None or self.proc.stdout is None:
            return
        with contextlib.suppress(Exception):
            while True:
                line = self.proc.stdout.readline(MAX_LINE + 1)
                if not line:
                    return
                if len(line) > MAX_LINE:  # the rest of an endless line: drop it
                    while line and not line.endswith(b"\n"):
                        line = self.proc.stdout.readline(MAX_LINE + 1)
                    continue
                text = describe_line(line)
                if text:
                    self.say(f"  agent {text}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
