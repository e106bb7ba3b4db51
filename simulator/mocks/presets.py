"""Ready-made scripts whose tool calls the real agent CLIs execute, per API (names and arguments as each CLI
declares them; checked against Claude Code 2.1.330, opencode 1.18.33, Gemini CLI 0.61.0 and Codex 0.171.0).

``chat`` (Chat Completions) is written for opencode's tools; Crush names its tools differently.
Every function returns a script for ``make_server``; pass it through ``json.dumps`` for ``--script``.
"""

from __future__ import annotations

import shlex
from typing import Any

# The tool each CLI runs a shell command with: (name, arguments for ``command``).
_SHELL = {
    "anthropic": lambda command: ("Bash", {"command": command, "description": "run a command"}),
    "chat": lambda command: ("bash", {"command": command, "description": "run a command"}),
    "gemini": lambda command: ("run_shell_command", {"command": command, "description": "run a command"}),
    "responses": lambda command: ("exec_command", {"cmd": command}),
}


def shell(command: str, text: str = "Done.") -> dict[str, Any]:
    """One shell command through each CLI's shell tool, then ``text``."""
    sections = {}
    for api, build in _SHELL.items():
        name, arguments = build(command)
        sections[api] = {"tool": {"name": name, "input": arguments}}
    return {"text": text, **sections}


def write_file(path: str, content: str, text: str = "Done.") -> dict[str, Any]:
    """Write ``content`` to the absolute ``path`` with each CLI's file-writing tool (Codex has none: it gets a
    shell command), then answer ``text``."""
    if not path.startswith("/"):
        raise ValueError(f"write_file needs an absolute path (the CLIs refuse relative ones), got {path!r}")
    command = f"printf %s {shlex.quote(content)} > {shlex.quote(path)}"
    return {
        "text": text,
        "anthropic": {"tool": {"name": "Write", "input": {"file_path": path, "content": content}}},
        "chat": {"tool": {"name": "write", "input": {"filePath": path, "content": content}}},
        "gemini": {"tool": {"name": "write_file", "input": {"file_path": path, "content": content}}},
        "responses": {"tool": {"name": "exec_command", "input": {"cmd": command}}},
    }


def http_error(status: int, message: str = "scripted failure") -> dict[str, Any]:
    """Every model request fails with ``status`` in the API's own error envelope."""
    return {"status": status, "error_message": message}


def slow_stream(text: str, chunks: int, chunk_delay: float) -> dict[str, Any]:
    """``text`` streamed as ``chunks`` deltas, ``chunk_delay`` seconds apart."""
    return {"text": text, "chunks": chunks, "chunk_delay": chunk_delay}
