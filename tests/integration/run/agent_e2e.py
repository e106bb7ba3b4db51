"""What every end-to-end agent test does: ``agentvm run`` on the double with a real agent CLI of the session's
golden, against the model-API mock, and the checks on what came back (shared by test_gemini.py, test_codex.py)."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agentvm.run.record import validate
from tests.conftest import REPO

HOSTILE_PROMPTS = {
    "metacharacters": b"'\"$(touch /tmp/pwned)\"' and `touch /tmp/pwned`; echo $HOME | cat > /tmp/pwned &",
    "leading-dashes": b"--help -p --yolo is not a flag here",
    "emoji-rtl": "emoji \U0001f680 and right-to-left \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627".encode(),
    "1MiB": ("x" * 1023 + "\n").encode() * 1024,
}


@dataclass
class Run:
    proc: subprocess.CompletedProcess
    folder: Path
    record: dict
    seconds: float

    def diagnose(self) -> str:
        stderr = self.folder / "stderr.log"
        tail = stderr.read_text(errors="replace")[-3000:] if stderr.exists() else ""
        return self.proc.stderr.decode(errors="replace")[-3000:] + "\n--- stderr.log ---\n" + tail


class AgentRunner:
    """Runs ``agentvm run`` for one agent against the mock; ``key`` is the host's credential."""

    def __init__(self, golden, mock, tmp_path: Path, agent: str, key_var: str, base_var: str) -> None:
        self.golden, self.mock, self.tmp = golden, mock, tmp_path
        self.agent, self.key_var, self.base_var = agent, key_var, base_var
        self.runs = tmp_path / "runs"

    def run(
        self,
        prompt: bytes,
        script: dict | None,
        key: str,
        *,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        base: str | None = None,
    ) -> Run:
        if base is None:
            base = self.mock.start(script or {})
        prompt_file = self.tmp / "prompt.bin"
        prompt_file.write_bytes(prompt)
        full = {
            **self.golden.env,
            "AGENTVM_RUNS_DIR": str(self.runs),
            "PYTHONPATH": str(REPO / "src"),
            "AGENT": self.agent,
            self.key_var: key,
            self.base_var: base,
            **(env or {}),
        }
        before = set(self.runs.iterdir()) if self.runs.exists() else set()
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "agentvm", "run", "--prompt-file", str(prompt_file), *(extra or [])],
            env=full,
            capture_output=True,
            timeout=1200,
            check=False,
        )
        seconds = time.monotonic() - started
        [folder] = sorted(set(self.runs.iterdir()) - before)
        record = json.loads((folder / "result.json").read_text())
        validate(record)
        return Run(proc, folder, record, seconds)

    def model_requests(self, marker: str) -> list[dict]:
        return [r for r in self.mock.requests() if r["method"] == "POST" and marker in r["path"]]

    def instances_left(self) -> list[str]:
        proc = self.golden.multipass("list", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        return [i["name"] for i in json.loads(proc.stdout)["list"] if "-run-" in i["name"]]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def assert_key_only_in_the_mock_header(run: Run, requests: list[dict], key: str, header: str) -> None:
    """The credential reached the mock in the expected header (the proxy put it there) and nowhere else: not
    in the run folder, not in what agentvm printed."""
    assert requests
    assert all(r["credential_header"] == header and r["credential_sha256"] == sha256(key) for r in requests)
    for path in run.folder.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    assert key.encode() not in run.proc.stdout + run.proc.stderr
    for r in requests:
        assert key not in json.dumps(r["body"])


def closed_port(host: str) -> int:
    """A port on ``host`` that nothing listens on (bound, then released: a connection to it is refused)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
