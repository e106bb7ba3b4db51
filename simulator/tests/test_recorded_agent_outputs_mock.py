"""The agent outputs recorded from the real CLIs against the mock (tests/unit/fixtures/agent_outputs) are whole and
say what their index (cases.json) claims: where each CLI puts the final answer, the tool call and the error. This
guards the fixtures the output parsers are tested with; it reads them with nothing but json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "unit" / "fixtures" / "agent_outputs"
INDEX = json.loads((FIXTURES / "cases.json").read_text(encoding="utf-8"))
ERROR_TEXT = "scripted failure: bad request"


def lines(name):
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines()]


def final_answer(name, entry):
    """The answer text, read the way each CLI's format carries it."""
    agent = entry["agent"]
    if name.endswith(".json"):
        return json.loads((FIXTURES / name).read_text())["response"]
    events = lines(name)
    if agent == "gemini":
        return "".join(e["content"] for e in events if e["type"] == "message" and e["role"] == "assistant")
    if agent == "codex":
        return [
            e["item"]["text"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"
        ][-1]
    if agent == "claude":
        return [e for e in events if e["type"] == "result"][-1]["result"]
    return "".join(e["part"]["text"] for e in events if e["type"] == "text")


def tool_names(name, entry):
    agent = entry["agent"]
    if name.endswith(".json"):
        return list(json.loads((FIXTURES / name).read_text())["stats"]["tools"]["byName"])
    events = lines(name)
    if agent == "gemini":
        return [e["tool_name"] for e in events if e["type"] == "tool_use"]
    if agent == "codex":
        done = [e["item"]["type"] for e in events if e["type"] == "item.completed"]
        return [kind for kind in done if kind not in ("agent_message", "error")]
    if agent == "claude":
        return [
            block["name"]
            for e in events
            if e["type"] == "assistant"
            for block in e["message"]["content"]
            if block["type"] == "tool_use"
        ]
    return [e["part"]["tool"] for e in events if e["type"] == "tool_use"]


def test_every_file_is_indexed_and_every_index_entry_has_its_file():
    files = {p.name for p in FIXTURES.iterdir()} - {"cases.json", "README.md"}
    assert files == set(INDEX)
    for name, entry in INDEX.items():
        assert name.startswith(f"{entry['agent']}-{entry['version']}-{entry['case']}.")
        assert (entry["stream"] == "stderr") == name.endswith(".stderr")


def test_no_secret_and_no_outside_host_in_the_fixtures():
    for path in FIXTURES.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "sk-test-not-a-secret" not in text, path.name
    for entry in INDEX.values():
        assert set(entry["environment"].values()) & {"sk-test-not-a-secret"} == set()


@pytest.mark.parametrize("name", sorted(n for n, e in INDEX.items() if e["case"] in ("plain", "slow")))
def test_plain_answers_carry_the_scripted_text(name):
    entry = INDEX[name]
    assert entry["exit_code"] == 0
    assert final_answer(name, entry) == entry["script"]["text"]


@pytest.mark.parametrize("name", sorted(n for n, e in INDEX.items() if e["case"] == "tool"))
def test_tool_runs_wrote_the_file_and_show_the_call(name):
    entry = INDEX[name]
    assert entry["exit_code"] == 0 and entry["hello_txt"] == "hi\n"
    expected = {"gemini": ["write_file"], "codex": ["command_execution"], "claude": ["Write"], "opencode": ["write"]}
    assert tool_names(name, entry) == expected[entry["agent"]]
    assert final_answer(name, entry) == entry["script"]["text"]


@pytest.mark.parametrize("name", sorted(n for n, e in INDEX.items() if e["case"] == "error"))
def test_error_runs_fail_and_carry_the_apis_message(name):
    entry = INDEX[name]
    assert entry["exit_code"] != 0 and entry["script"]["status"] == 400
    assert ERROR_TEXT in (FIXTURES / name).read_text(encoding="utf-8")


def test_gemini_reports_http_errors_as_status_modulo_256():
    assert {INDEX[n]["exit_code"] for n in INDEX if n.startswith("gemini-") and INDEX[n]["case"] == "error"} == {
        400 % 256
    }


def test_codex_idle_timeout_ends_the_turn_with_turn_failed():
    [name] = [n for n, e in INDEX.items() if e["case"] == "idle-timeout"]
    events = lines(name)
    assert INDEX[name]["exit_code"] == 1 and events[-1]["type"] == "turn.failed"
    assert "idle timeout" in events[-1]["error"]["message"]
