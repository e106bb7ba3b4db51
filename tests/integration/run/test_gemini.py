"""The real Gemini CLI inside a clone of the session's golden, through ``agentvm run``, against the local Gemini-API
mock (the credential proxy in between, as by default)."""

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
ANSWER = "Gemini heard the mock."
GENERATE = ":streamGenerateContent"


@pytest.fixture
def gemini(golden, mock, tmp_path):
    return AgentRunner(golden, mock, tmp_path, "gemini", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL")


def user_texts(request: dict) -> list[str]:
    return [
        part["text"]
        for content in request["body"].get("contents", [])
        if content.get("role") == "user"
        for part in content.get("parts", [])
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ]


@pytest.mark.parametrize("prompt", list(HOSTILE_PROMPTS.values()), ids=list(HOSTILE_PROMPTS))
def test_gemini_answers_and_receives_the_prompt_exactly(gemini, prompt):
    key = f"gm-key-marker-{uuid.uuid4().hex}"
    run = gemini.run(prompt, {"text": ANSWER}, key, extra=["--model", "gemini-mock"])
    assert run.proc.returncode == 0, run.diagnose()
    record = run.record
    assert record["status"] == "succeeded" and record["result_text"] == ANSWER
    assert record["agent"]["name"] == "gemini" and "0.61.0" in record["agent"]["version"]
    assert record["agent"]["model"] == "gemini-mock"
    assert record["usage"]["total_tokens"] > 0
    requests = gemini.model_requests(GENERATE)
    assert all(r["path"].startswith("/v1beta/models/gemini-mock:streamGenerateContent") for r in requests)
    assert any(prompt.decode() in user_texts(r) for r in requests), [t[:200] for t in user_texts(requests[0])]
    assert_key_only_in_the_mock_header(run, requests, key, "x-goog-api-key")
    assert (run.folder / "agent-output.json").exists()
    assert not Path("/tmp/pwned").exists()


def test_gemini_writes_a_file_in_the_workspace_and_the_patch_comes_back(gemini, tmp_path):
    original = tmp_path / "proj"
    original.mkdir()
    (original / "README.md").write_text("project\n")
    script = presets.write_file("/home/ubuntu/workspace/hello.txt", "hi from gemini\n", "Wrote hello.txt.")
    key = f"gm-key-marker-{uuid.uuid4().hex}"
    run = gemini.run(b"write hello.txt", script, key, extra=["--workspace", str(original), "--max-turns", "5"])
    assert run.proc.returncode == 0, run.diagnose()
    assert run.record["result_text"] == "Wrote hello.txt."
    patch = (run.folder / "workspace.patch").read_text()
    assert "+hi from gemini" in patch and "hello.txt" in patch
    assert not (original / "hello.txt").exists()  # the host's folder is never written
    requests = gemini.model_requests(GENERATE)
    assert len(requests) == 2  # the tool call, then the answer to its result
    responses = [p for c in requests[1]["body"]["contents"] for p in c.get("parts", []) if "functionResponse" in p]
    assert responses and responses[0]["functionResponse"]["name"] == "write_file"
    assert any("write_file" in json.dumps(e) for e in json.loads((run.folder / "agent-output.json").read_text()))
    assert_key_only_in_the_mock_header(run, requests, key, "x-goog-api-key")


def test_an_http_error_from_the_api_is_agent_failed_with_its_message(gemini):
    run = gemini.run(b"say hi", presets.http_error(400, "the mock refuses: bad request"), "gm-key")
    assert run.proc.returncode != 0
    record = run.record
    assert record["status"] == "agent_failed", record["error"]
    assert "the mock refuses: bad request" in record["error"]["message"]
    assert len(gemini.model_requests(GENERATE)) == 1  # maxAttempts 1: no retry
    assert gemini.instances_left() == []


def test_a_refused_connection_ends_within_the_timeout(gemini, mock):
    # CREDENTIALS=direct and EGRESS=open: the CLI itself meets the refused connection (no proxy in between).
    base = f"http://{mock.host}:{closed_port(mock.host)}"
    run = gemini.run(
        b"say hi", None, "gm-key", base=base, env={"TIMEOUT": "60", "CREDENTIALS": "direct", "EGRESS": "open"}
    )
    record = run.record
    assert record["status"] in ("agent_failed", "timed_out"), record["error"]
    assert record["timings"]["agent"] <= 60 + 60
    print(f"\ngemini, refused connection: {record['status']} after {record['timings']['agent']:.1f} s in the agent, "
          f"{run.seconds:.1f} s in all")  # fmt: skip
    assert gemini.instances_left() == []
