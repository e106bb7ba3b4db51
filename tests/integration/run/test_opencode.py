"""An OpenAI-compatible agent (opencode) inside a clone of the golden VM, against the Chat Completions mock."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from agentvm.run.record import validate
from tests.conftest import REPO
from tests.integration.run.conftest import Mock

pytestmark = pytest.mark.double
ANSWER = "opencode heard the mock."


def test_opencode_answers_from_the_chat_completions_mock(golden, mock: Mock, tmp_path):
    base = mock.start({"text": ANSWER})
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "mock": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Mock",
                # The VM reaches the model API only through the credential proxy, whose URL it gets in
                # OPENAI_BASE_URL (egress is denied otherwise); the host's OPENAI_BASE_URL is the proxy's upstream.
                "options": {"baseURL": "{env:OPENAI_BASE_URL}", "apiKey": "{env:OPENAI_API_KEY}"},
                "models": {"m1": {"name": "m1"}},
            }
        },
        "model": "mock/m1",
    }
    runs = tmp_path / "runs"
    prompt = "say hello; $(touch /tmp/pwned) `id` \u05e9\u05dc\u05d5\u05dd \U0001f600"
    env = {
        **golden.env,
        "AGENTVM_RUNS_DIR": str(runs),
        "PYTHONPATH": str(REPO / "src"),
        "AGENT": "opencode",
        "MODEL": "mock/m1",
        "OPENAI_API_KEY": "sk-openai-test",
        "OPENAI_BASE_URL": f"{base}/v1",
        "OPENCODE_CONFIG_CONTENT": json.dumps(config),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "agentvm", "run", prompt], env=env, capture_output=True, timeout=900, check=False
    )
    [folder] = sorted(runs.iterdir())
    record = json.loads((folder / "result.json").read_text())
    validate(record)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:] + (folder / "stderr.log").read_text()[-2000:]
    assert record["status"] == "succeeded" and record["result_text"] == ANSWER
    chats = [r for r in mock.requests() if r["path"].split("?")[0].endswith("/chat/completions")]
    assert chats, mock.requests()
    assert all(r["credential_sha256"] == hashlib.sha256(b"sk-openai-test").hexdigest() for r in chats)
    texts = [
        part if isinstance(part, str) else part.get("text", "")
        for r in chats
        for m in r["body"]["messages"]
        if m.get("role") == "user"
        for part in (m["content"] if isinstance(m["content"], list) else [m["content"]])
    ]
    assert prompt in texts, json.dumps([r["body"].get("messages") for r in chats], ensure_ascii=False)[:6000]
