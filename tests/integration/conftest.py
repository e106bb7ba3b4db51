"""Fixtures shared by integration tests: a golden VM built once per test session with ``make golden``.

``golden``  (session) builds ``<prefix>-golden`` in the session's double data folder with ``make golden``, with
            ``ANTHROPIC_API_KEY`` set to a unique marker in the build's environment (tests grep the golden for
            it). Returns a :class:`Golden` with the name, the manifest, the build's output and duration, and
            helpers to run ``make`` and the double against the same data folder. Run-pipeline tests reuse it.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from simulator import DOUBLE_BIN

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Golden:
    name: str
    prefix: str
    env: dict[str, str]
    secret_marker: str
    build_seconds: float
    build_output: str
    manifest: dict = field(default_factory=dict)

    def make(
        self, *targets_and_vars: str, env: dict[str, str] | None = None, timeout: float = 3600
    ) -> subprocess.CompletedProcess:
        full_env = dict(self.env)
        full_env.update(env or {})
        return subprocess.run(
            ["make", "--no-print-directory", *targets_and_vars],
            cwd=REPO,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def multipass(self, *args: str, input: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(DOUBLE_BIN), *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def info(self) -> dict:
        proc = self.multipass("info", self.name, f"{self.name}.sealed", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["info"][self.name]

    def clone(self) -> str:
        """A started clone of the golden (the caller deletes it)."""
        name = f"{self.prefix}-t-{uuid.uuid4().hex[:6]}"
        proc = self.multipass("clone", self.name, "--name", name)
        assert proc.returncode == 0, proc.stderr
        proc = self.multipass("start", name)
        assert proc.returncode == 0, proc.stderr
        proc = self.multipass("exec", name, "--", "cloud-init", "status", "--wait")
        assert proc.returncode in (0, 2), proc.stdout + proc.stderr
        return name


GoldenFn = Callable[[], Golden]


@pytest.fixture(scope="session")
def golden(double_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Golden:
    prefix = "agentvm"
    marker = f"sk-ant-agentvm-test-marker-{uuid.uuid4().hex}"
    env = dict(double_env)
    env.update(
        AGENTVM_PREFIX=prefix,
        ANTHROPIC_API_KEY=marker,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        AGENTVM_GOLDEN_DIR=str(tmp_path_factory.mktemp("golden")),
    )
    for var in ("FORCE", "KEEP"):
        env.pop(var, None)
    # Every agent that installs from the npm registry alone, each tested against its local mock.
    env["AGENTS"] = "claude,opencode,gemini,codex"
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "--no-print-directory", "golden"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    seconds = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"make golden failed after {seconds:.0f} s:\n{output[-6000:]}"
    manifest = json.loads((Path(env["AGENTVM_GOLDEN_DIR"]) / "manifest.json").read_text())
    return Golden(f"{prefix}-golden", prefix, env, marker, seconds, output, manifest)


def make_fake_golden(env: dict[str, str], prefix: str, build_id: str) -> None:
    """``<prefix>-golden`` as a plain launched-and-stopped instance with a ``sealed`` snapshot whose comment is a
    manifest naming ``build_id``: what the run pipeline checks of a golden, without the agents."""
    manifest = json.dumps({"schema": 1, "build_id": build_id, "built_at": "2026-12-01T00:00:00Z"})
    golden = f"{prefix}-golden"
    steps = (
        ["launch", "--name", golden],
        ["stop", golden],
        ["snapshot", "--name", "sealed", "--comment", manifest, golden],
    )
    for argv in steps:
        proc = subprocess.run([str(DOUBLE_BIN), *argv], env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def fake_golden(double_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A launched-and-stopped plain instance standing in for the golden, under a prefix of its own: for tests
    of the run pipeline and of operations, which need a golden to clone but not the agents in it. Yields the
    environment (``AGENTVM_PREFIX`` set); the instance is purged afterwards."""
    prefix = "p" + uuid.uuid4().hex[:6]
    env = dict(double_env, AGENTVM_PREFIX=prefix)
    make_fake_golden(env, prefix, f"fake-{prefix}")
    yield env
    subprocess.run(
        [str(DOUBLE_BIN), "delete", "--purge", f"{prefix}-golden"], env=env, capture_output=True, check=False
    )
