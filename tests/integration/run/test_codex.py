"""The real Codex CLI inside a clone of the session's golden, through ``agentvm run``, against the local
Responses-API mock (the credential proxy in between, as by default)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from simulator.mocks import presets
from tests.integration.run.agent_e2e import (
    HOSTILE_PROMPTS,
    AgentRunner,
    assert_key_only_in_the_mock_header,
    closed_port,
)

pytestmark = pytest.mark.double
ANSWER = "Codex heard the mock."
RESPONSES = "/v1/responses"


@pytest.fixture
def codex(golden, mock, tmp_path):
    return AgentRunner(golden, mock, tmp_path, "codex", "OPENAI_API_KEY", "OPENAI_BASE_URL")


def user_texts(request: dict) -> list[str]:
    return [
        part["text"]
        for item in request["body"].get("input", [])
        if isinstance(item, dict) and item.get("role") == "user"
        for part in item.get("content", [])
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ]


@pytest.mark.parametrize("prompt", list(HOSTILE_PROMPTS.values()), ids=list(HOSTILE_PROMPTS))
def test_codex_answers_and_receives_the_prompt_exactly(codex, prompt):
    key = f"sk-codex-marker-{uuid.uuid4().hex}"
    run = codex.run(prompt, {"text": ANSWER}, key, extra=["--model", "gpt-mock"])
    assert run.proc.returncode == 0, run.diagnose()
    record = run.record
    assert record["status"] == "succeeded" and record["result_text"] == ANSWER
    assert record["agent"]["name"] == "codex" and "0.171.0" in record["agent"]["version"]
    assert record["usage"]["output_tokens"] > 0
    requests = codex.model_requests(RESPONSES)
    assert all(r["body"]["model"] == "gpt-mock" for r in requests)
    assert any(prompt.decode() in user_texts(r) for r in requests), [t[:200] for t in user_texts(requests[0])]
    assert_key_only_in_the_mock_header(run, requests, key, "authorization")
    assert not Path("/tmp/pwned").exists()


def test_codex_writes_a_file_in_the_workspace_and_the_patch_comes_back(codex, tmp_path):
    original = tmp_path / "proj"
    original.mkdir()
    (original / "README.md").write_text("project\n")
    script = presets.write_file("/home/ubuntu/workspace/hello.txt", "hi from codex\n", "Wrote hello.txt.")
    key = f"sk-codex-marker-{uuid.uuid4().hex}"
    # gpt-mock: a model Codex has no metadata for gets the fallback tool set, where the shell tool is exec_command.
    run = codex.run(b"write hello.txt", script, key, extra=["--workspace", str(original), "--model", "gpt-mock"])
    assert run.proc.returncode == 0, run.diagnose()
    assert run.record["result_text"] == "Wrote hello.txt."
    patch = (run.folder / "workspace.patch").read_text()
    assert "+hi from codex" in patch and "hello.txt" in patch
    assert not (original / "hello.txt").exists()
    requests = codex.model_requests(RESPONSES)
    assert len(requests) == 2
    outputs = [
        i for i in requests[1]["body"]["input"] if isinstance(i, dict) and i.get("type") == "function_call_output"
    ]
    assert outputs, json.dumps(requests[1]["body"]["input"])[:3000]
    events = json.loads((run.folder / "agent-output.json").read_text())
    assert any(e.get("item", {}).get("type") == "command_execution" for e in events)
    assert_key_only_in_the_mock_header(run, requests, key, "authorization")


def test_an_http_error_from_the_api_is_agent_failed_with_its_message(codex):
    run = codex.run(b"say hi", presets.http_error(400, "the mock refuses: bad request"), "sk-codex")
    assert run.proc.returncode != 0
    record = run.record
    assert record["status"] == "agent_failed", record["error"]
    assert "the mock refuses: bad request" in record["error"]["message"]
    assert len(codex.model_requests(RESPONSES)) == 1  # request_max_retries 0
    assert codex.instances_left() == []


def test_a_refused_connection_ends_within_the_timeout(codex, mock):
    # CREDENTIALS=direct and EGRESS=open: the CLI itself meets the refused connection (it retries without end).
    base = f"http://{mock.host}:{closed_port(mock.host)}/v1"
    run = codex.run(
        b"say hi", None, "sk-codex", base=base, env={"TIMEOUT": "60", "CREDENTIALS": "direct", "EGRESS": "open"}
    )
    record = run.record
    assert record["status"] in ("agent_failed", "timed_out"), record["error"]
    assert record["timings"]["agent"] <= 60 + 60
    print(f"\ncodex, refused connection: {record['status']} after {record['timings']['agent']:.1f} s in the agent, "
          f"{run.seconds:.1f} s in all")  # fmt: skip
    assert codex.instances_left() == []
