"""The real Claude Code CLI inside a clone of the built golden VM, against the local Messages-API mock."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agentvm.run.record import validate
from tests.conftest import REPO

pytestmark = pytest.mark.double
ANSWER = "The mock model says: 42."


@pytest.fixture
def run_claude(golden, mock, tmp_path):
    runs = tmp_path / "runs"

    def run(prompt: bytes, script: dict, extra: list[str] | None = None, key: str = "sk-ant-test"):
        base = mock.start(script)
        prompt_file = tmp_path / "prompt.bin"
        prompt_file.write_bytes(prompt)
        env = {
            **golden.env,
            "AGENTVM_RUNS_DIR": str(runs),
            "PYTHONPATH": str(REPO / "src"),
            "ANTHROPIC_API_KEY": key,
            "ANTHROPIC_BASE_URL": base,
            "CLAUDE_CODE_MAX_RETRIES": "1",
            "AGENT": "claude",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "agentvm", "run", "--prompt-file", str(prompt_file), *(extra or [])],
            env=env,
            capture_output=True,
            timeout=900,
            check=False,
        )
        [folder] = sorted(runs.iterdir())
        record = json.loads((folder / "result.json").read_text())
        validate(record)
        return proc, folder, record

    return run


def user_texts(request: dict) -> list[str]:
    texts = []
    for message in request["body"].get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        else:
            texts += [c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text"]
    return texts


@pytest.mark.parametrize(
    "prompt",
    [
        b"'\"$(touch /tmp/pwned)\"' and `touch /tmp/pwned`",
        b"--dangerously-skip-permissions is not a flag here",
        "emoji \U0001f680 and right-to-left \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627".encode(),
        ("x" * 1023 + "\n").encode() * 1024,  # 1 MiB
    ],
    ids=["metacharacters", "leading-dashes", "emoji-rtl", "1MiB"],
)
def test_claude_code_answers_from_the_mock_and_receives_the_prompt_exactly(run_claude, mock, prompt):
    proc, folder, record = run_claude(prompt, {"text": ANSWER})
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert record["status"] == "succeeded" and record["result_text"] == ANSWER
    assert record["agent"]["name"] == "claude" and record["agent"]["version"]
    messages = [r for r in mock.requests() if r["method"] == "POST" and r["path"].startswith("/v1/messages")]
    assert messages, mock.requests()
    assert any(prompt.decode() in user_texts(r) for r in messages)
    assert all(r["credential_sha256"] == hashlib.sha256(b"sk-ant-test").hexdigest() for r in messages)
    assert (folder / "agent-output.json").exists()
    assert not Path("/tmp/pwned").exists()


def test_tool_call_edits_the_workspace_and_the_key_never_shows(run_claude, golden, tmp_path):
    original = tmp_path / "proj"
    original.mkdir()
    (original / "parser.py").write_text("def parse(x):\n    return x\n")
    key = f"sk-ant-run-marker-{uuid.uuid4().hex}"
    trace = tmp_path / "trace.jsonl"
    command = "sed -i 's/return x/return x + 1/' parser.py && ps -eo args > ~/output/ps.txt"
    script = {
        "text": "Fixed the off-by-one.",
        "tool": {"name": "Bash", "input": {"command": command, "description": "fix"}},
    }
    golden.env["MULTIPASS_DOUBLE_TRACE"] = str(trace)
    try:
        proc, folder, record = run_claude(b"fix parser.py", script, ["--workspace", str(original)], key=key)
    finally:
        golden.env.pop("MULTIPASS_DOUBLE_TRACE")
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert record["result_text"] == "Fixed the off-by-one."
    assert (original / "parser.py").read_text() == "def parse(x):\n    return x\n"
    check = subprocess.run(
        ["git", "apply", "--check", str(folder / "workspace.patch")], cwd=original, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert "+    return x + 1" in (folder / "workspace.patch").read_text()
    assert "claude" in (folder / "output" / "ps.txt").read_text()
    for path in folder.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    assert key not in trace.read_text()
    assert key not in (proc.stdout + proc.stderr).decode()
