"""The script that tells the model-API mock how to answer: validated once, then read per request.

A script is a JSON object. Every key is optional:

``text``          the final answer (default ``"Hello from the mock"``).
``tool``          ``{"name": ..., "input": {...}}``: a request that declares tools and carries fewer than
                  ``tool_rounds`` tool results is answered with this tool call; later requests get ``text``.
``tool_rounds``   how many tool calls to make before answering with ``text`` (default 1).
``status``        answer every model request with this HTTP error status, in the API's own error envelope.
``error_message`` the message inside that envelope (default ``"scripted failure"``).
``delay``         seconds to wait before answering (Anthropic streams send ``ping`` events meanwhile).
``chunks``        split the streamed text into this many deltas (default 1).
``chunk_delay``   seconds between two deltas of a stream (default 0).

``anthropic``, ``chat``, ``gemini``, ``responses``: a partial script with the keys above, merged over the
top level for that API only (Anthropic Messages, OpenAI Chat Completions, Gemini, OpenAI Responses). A
test driving several agents from one server can so give each CLI the tool it knows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

APIS = ("anthropic", "chat", "gemini", "responses")
DEFAULT_TEXT = "Hello from the mock"
MAX_CHUNKS = 10_000
MAX_SECONDS = 3600.0
_KEYS = ("text", "tool", "tool_rounds", "status", "error_message", "delay", "chunks", "chunk_delay")


class ScriptError(ValueError):
    """The script is not a valid mock script (the message says which key and why)."""


def _number(where: str, value: Any, low: float, high: float, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ScriptError(f"{where} must be {kind} from {low:g} to {high:g}, got {value!r}")
    return value


def _check_level(where: str, level: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(level) - set(allowed))
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
    if "text" in level and not isinstance(level["text"], str):
        raise ScriptError(f"{where}.text must be a string")
    if "error_message" in level and not isinstance(level["error_message"], str):
        raise ScriptError(f"{where}.error_message must be a string")
    tool = level.get("tool")
    if tool is not None and (
        not isinstance(tool, Mapping)
        or not isinstance(tool.get("name"), str)
        or not tool["name"]
        or not isinstance(tool.get("input"), Mapping)
        or set(tool) - {"name", "input"}
    ):
        raise ScriptError(f'{where}.tool must be {{"name": "<tool>", "input": {{...}}}}, got {tool!r}')
    if level.get("status") is not None:
        _number(f"{where}.status", level["status"], 400, 599, integer=True)
    for key in ("delay", "chunk_delay"):
        if key in level:
            _number(f"{where}.{key}", level[key], 0, MAX_SECONDS)
    if "chunks" in level:
        _number(f"{where}.chunks", level["chunks"], 1, MAX_CHUNKS, integer=True)
    if "tool_rounds" in level:
        _number(f"{where}.tool_rounds", level["tool_rounds"], 0, MAX_CHUNKS, integer=True)


def validate(script: Any) -> dict[str, Any]:
    """Return a copy of ``script`` after checking it; raise ScriptError with an actionable message."""
    if not isinstance(script, Mapping):
        raise ScriptError(f"a mock script must be a JSON object, got {type(script).__name__}")
    _check_level("script", script, (*_KEYS, *APIS))
    for api in APIS:
        if api in script:
            if not isinstance(script[api], Mapping):
                raise ScriptError(f"script.{api} must be an object")
            _check_level(f"script.{api}", script[api], _KEYS)
    return {key: (dict(value) if isinstance(value, Mapping) else value) for key, value in script.items()}


class Plan:
    """The script as seen by one API: the top level with that API's section merged over it."""

    def __init__(self, script: Mapping[str, Any], api: str) -> None:
        merged = {key: value for key, value in script.items() if key not in APIS}
        merged.update(script.get(api) or {})
        self.api = api
        self.text: str = merged.get("text", DEFAULT_TEXT)
        self.tool: dict[str, Any] | None = merged.get("tool")
        self.tool_rounds: int = int(merged.get("tool_rounds", 1))
        self.status: int | None = merged.get("status")
        self.error_message: str = merged.get("error_message", "scripted failure")
        self.delay = float(merged.get("delay", 0))
        self.chunks = int(merged.get("chunks", 1))
        self.chunk_delay = float(merged.get("chunk_delay", 0))

    def wants_tool(self, declares_tools: bool, tool_results: int) -> bool:
        """Ask for the tool while the request offers tools and fewer than tool_rounds results came back."""
        return self.tool is not None and declares_tools and tool_results < self.tool_rounds

    def pieces(self) -> list[str]:
        """The answer text cut into ``chunks`` pieces (fewer when the text is shorter); joined, they give it back."""
        text = self.text
        count = max(1, min(self.chunks, len(text)))
        size, extra = divmod(len(text), count)
        pieces, start = [], 0
        for index in range(count):
            end = start + size + (1 if index < extra else 0)
            pieces.append(text[start:end])
            start = end
        return pieces
