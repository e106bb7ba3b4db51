"""Fixtures for running ansible, ansible-playbook and ansible-inventory against the Multipass double."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from it_helpers import ANSIBLE_BIN, REPO, write_hosts

AnsibleFn = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def ansible_env(double_env: dict[str, str]) -> dict[str, str]:
    env = dict(double_env)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    return env


@pytest.fixture(scope="session")
def ansible(ansible_env: dict[str, str]) -> AnsibleFn:
    """``ansible("ansible-playbook", *args, env=..., timeout=...)`` run from the repository root."""

    def run(
        tool: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        full_env = dict(ansible_env)
        full_env.update(env or {})
        return subprocess.run(
            [str(ANSIBLE_BIN / tool), *args],
            env=full_env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def hosts(instance: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hosts(tmp_path_factory.mktemp("inventory") / "hosts.ini", instance)


@pytest.fixture
def own_instance(multipass) -> Iterator[Callable[..., str]]:
    """Launch instances for one test (``own_instance(stopped=True)``); all are purged afterwards."""
    created: list[str] = []

    def launch(stopped: bool = False, prefix: str = "it") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        proc = multipass("launch", "--name", name)
        assert proc.returncode == 0, proc.stderr
        created.append(name)
        if stopped:
            proc = multipass("stop", name)
            assert proc.returncode == 0, proc.stderr
        return name

    yield launch
    for name in created:
        multipass("delete", "--purge", name)


@pytest.fixture(scope="session")
def instance_state(multipass) -> Callable[[str], str | None]:
    """The instance's state as Multipass reports it (``None`` when it does not exist)."""

    def state(name: str) -> str | None:
        proc = multipass("info", name, "--format", "json", "--no-runtime-information")
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)["info"][name]["state"]

    return state


class Trace:
    """The double's trace (``MULTIPASS_DOUBLE_TRACE``): one JSON object per invocation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {"MULTIPASS_DOUBLE_TRACE": str(path)}

    def argvs(self) -> list[list[str]]:
        if not self.path.exists():
            return []
        return [json.loads(line)["argv"] for line in self.path.read_text().splitlines() if line.strip()]

    def commands(self) -> list[str]:
        """The Multipass command of each invocation (``argv[1]``), in order."""
        return [argv[1] for argv in self.argvs()]


@pytest.fixture
def trace(tmp_path: Path) -> Trace:
    return Trace(tmp_path / "multipass-trace.jsonl")
