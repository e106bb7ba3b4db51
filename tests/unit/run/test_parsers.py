"""The output parsers over what the real agent CLIs printed (tests/unit/fixtures/agent_outputs, recorded against
the local mocks; cases.json holds each recording's command line and exit code). The expected values below were
read off the recordings by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentvm.run.parsers import MAX_TEXT, PARSERS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "agent_outputs"
CASES = json.loads((FIXTURES / "cases.json").read_text())
ERROR_400 = "scripted failure: bad request"

# fixture, format, result_text, usage (dotted path -> value), model, is_error, error (a part of it)
TABLE = [
    ("claude-2.1.330-plain.jsonl", "claude_stream_json", "OK from the mock.", {"input_tokens": 25, "output_tokens": 6}, "claude-mock", False, None),
    ("claude-2.1.330-tool.jsonl", "claude_stream_json", "Wrote hello.txt.", {"input_tokens": 50, "output_tokens": 12}, "claude-mock", False, None),
    ("claude-2.1.330-error.jsonl", "claude_stream_json", "API Error: 400 scripted failure: bad request", {"output_tokens": 0}, "claude-mock", True, "API Error: 400 " + ERROR_400),
    ("gemini-0.61.0-plain.jsonl", "gemini_stream_json", "OK from the mock.", {"input_tokens": 145, "output_tokens": 6, "total_tokens": 151}, "gemini-2.5-pro", False, None),
    ("gemini-0.61.0-tool.jsonl", "gemini_stream_json", "Wrote hello.txt.", {"tool_calls": 1, "total_tokens": 437}, "gemini-2.5-pro", False, None),
    ("gemini-0.61.0-slow.jsonl", "gemini_stream_json", "one two three", {"duration_ms": 2132}, "gemini-2.5-pro", False, None),
    ("gemini-0.61.0-error.jsonl", "gemini_stream_json", None, {"total_tokens": 0}, "gemini-2.5-pro", True, ERROR_400),
    ("gemini-0.61.0-plain.json", "gemini_json", "OK from the mock.", {("models", "gemini-2.5-pro", "tokens", "total"): 151}, "gemini-2.5-pro", False, None),
    ("gemini-0.61.0-tool.json", "gemini_json", "Wrote hello.txt.", {("tools", "byName", "write_file", "count"): 1}, "gemini-2.5-pro", False, None),
    ("gemini-0.61.0-error.stderr", "gemini_json", None, None, None, True, ERROR_400),
    ("codex-0.171.0-plain.jsonl", "codex_jsonl", "OK from the mock.", {"input_tokens": 5268, "output_tokens": 6}, None, False, None),
    ("codex-0.171.0-tool.jsonl", "codex_jsonl", "Wrote hello.txt.", {"input_tokens": 10660, "output_tokens": 12}, None, False, None),
    ("codex-0.171.0-error.jsonl", "codex_jsonl", None, None, None, True, ERROR_400),
    ("codex-0.171.0-idle-timeout.jsonl", "codex_jsonl", None, None, None, True, "idle timeout waiting for SSE"),
    ("opencode-1.18.33-plain.jsonl", "opencode_jsonl", "OK from the mock.", None, None, False, None),
    ("opencode-1.18.33-tool.jsonl", "opencode_jsonl", "Wrote hello.txt.", None, None, False, None),
    ("opencode-1.18.33-error.jsonl", "opencode_jsonl", None, None, None, True, ERROR_400),
]  # fmt: skip


def _streams(name: str, tmp_path: Path) -> tuple[Path, Path | None]:
    """(stdout, stderr) of a recording: a `.stderr` fixture is what the CLI printed on stderr, its stdout empty."""
    if CASES[name]["stream"] == "stderr":
        stdout = tmp_path / "stdout.log"
        stdout.write_bytes(b"")
        return stdout, FIXTURES / name
    return FIXTURES / name, None


def _at(doc: dict, path: str | tuple[str, ...]) -> object:
    for key in (path,) if isinstance(path, str) else path:
        doc = doc[key]
    return doc


def test_the_table_covers_every_recording():
    assert sorted(row[0] for row in TABLE) == sorted(CASES)


@pytest.mark.parametrize(
    ("name", "fmt", "text", "usage", "model", "is_error", "error"), TABLE, ids=[r[0] for r in TABLE]
)
def test_parser_reads_the_recording(tmp_path, name, fmt, text, usage, model, is_error, error):
    stdout, stderr = _streams(name, tmp_path)
    parsed = PARSERS[fmt](stdout, stderr)
    assert parsed.result_text == text
    assert parsed.model == model
    assert parsed.is_error is is_error
    assert (CASES[name]["exit_code"] != 0) is is_error  # the recording itself says whether it failed
    if error is None:
        assert parsed.error is None
    else:
        assert error in (parsed.error or ""), parsed.error
        assert len(parsed.error) <= 2000
    if usage is not None:
        assert parsed.usage is not None
        for path, value in usage.items():
            assert _at(parsed.usage, path) == value, path


def test_codex_metadata_warning_item_is_not_an_error():
    # Every recording starts with an item.completed of type "error" (model metadata not found): not fatal.
    first_item = json.loads((FIXTURES / "codex-0.171.0-plain.jsonl").read_text().splitlines()[1])
    assert first_item["item"]["type"] == "error"
    assert PARSERS["codex_jsonl"](FIXTURES / "codex-0.171.0-plain.jsonl", None).is_error is False


def test_gemini_stream_without_result_takes_the_error_from_stderr(tmp_path):
    # A run cut before its result event: the message Gemini CLI printed on stderr is the error.
    stdout = tmp_path / "stdout.log"
    stdout.write_text("\n".join((FIXTURES / "gemini-0.61.0-plain.jsonl").read_text().splitlines()[:2]) + "\n")
    stderr = tmp_path / "stderr.log"
    stderr.write_text("YOLO mode is enabled.\nInvalid auth method selected.\n")
    parsed = PARSERS["gemini_stream_json"](stdout, stderr)
    assert parsed.is_error and parsed.error == "Invalid auth method selected."
    assert parsed.model == "gemini-2.5-pro" and parsed.result_text is None


@pytest.mark.parametrize("fmt", sorted(PARSERS))
def test_parsers_survive_hostile_output(tmp_path, fmt):
    stdout = tmp_path / "stdout.log"
    stdout.write_bytes(
        b"\x00\xff garbage\n[1,2]\n{not json\n"
        + b'{"type": "result", "status": 7, "stats": [], "error": {"message": 5}}\n'
        + b'{"type": "item.completed", "item": "x"}\n{"type": "turn.failed", "error": "'
        + b"e" * 10000
        + b'"}\n'
        + b'{"type": "message", "role": "assistant", "content": ["x"]}\n'
        + b"[" * 100000
        + b"\n"
    )
    stderr = tmp_path / "stderr.log"
    stderr.write_bytes(b"{\n" + b"x" * 200000 + b"\n")
    parsed = PARSERS[fmt](stdout, stderr)
    assert parsed.error is None or len(parsed.error) <= 2000
    assert parsed.result_text is None or len(parsed.result_text) <= MAX_TEXT
    assert parsed.usage is None or isinstance(parsed.usage, dict)
    assert parsed.model is None or isinstance(parsed.model, str)


def test_gemini_stream_text_is_bounded(tmp_path):
    stdout = tmp_path / "stdout.log"
    piece = json.dumps({"type": "message", "role": "assistant", "content": "y" * 65536, "delta": True})
    stdout.write_text((piece + "\n") * 40 + '{"type": "result", "status": "success", "stats": {}}\n')
    parsed = PARSERS["gemini_stream_json"](stdout, None)
    assert len(parsed.result_text) == MAX_TEXT and not parsed.is_error
    assert [w["code"] for w in parsed.warnings] == ["result_text_truncated"]
