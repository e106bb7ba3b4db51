"""pytest fixtures of the Multipass double (registered by the repository's root ``conftest.py``).

``double_env``  (session) environment for anything that must reach the double: ``MULTIPASS_BIN`` points
                at ``simulator/bin/multipass`` and ``MULTIPASS_DOUBLE_DATA`` at a data folder private to
                this test session. The session tears the double down at the end (nothing outlives it).
                Tests that need it are skipped, with the reason, where the double cannot run (not root,
                no systemd-nspawn).
``multipass``   a callable ``multipass(*args, input=None, env=None, timeout=...)`` -> CompletedProcess (text).
``instance``    (session) the name of one Running instance launched for the whole session; tests must not
                stop or delete it (launch their own for that).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest

from simulator import DOUBLE_ADMIN, DOUBLE_BIN, REPO


def double_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "the Multipass double needs root (systemd-nspawn, overlay mounts, a bridge)"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is missing (apt-get install systemd-container)"
    return None


@pytest.fixture(scope="session")
def double_env() -> Iterator[dict[str, str]]:
    reason = double_unavailable_reason()
    if reason:
        pytest.skip(reason)
    data = REPO / ".cache" / f"test-double-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ)
    env["MULTIPASS_BIN"] = str(DOUBLE_BIN)
    env["MULTIPASS_DOUBLE_DATA"] = str(data)
    # agentvm's host-wide run state (liveness locks, queue, VM slots) is private to the session's data folder.
    env["AGENTVM_STATE_DIR"] = str(data) + "-agentvm-state"
    env.pop("MULTIPASS_DOUBLE_TRACE", None)
    env.pop("MULTIPASS_DOUBLE_FAIL", None)
    env.pop("MULTIPASS_DOUBLE_LATENCY", None)
    # Build the machine-wide image up front (a no-op once built), so no test's output carries its progress.
    subprocess.run([sys.executable, str(DOUBLE_ADMIN), "build-image"], check=True, timeout=1200)
    try:
        yield env
    finally:
        subprocess.run(
            [sys.executable, str(DOUBLE_ADMIN), "down", "--data", str(data), "--purge", "--quiet"],
            check=False,
            timeout=300,
        )
        shutil.rmtree(env["AGENTVM_STATE_DIR"], ignore_errors=True)


MultipassFn = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def multipass(double_env: dict[str, str]) -> MultipassFn:
    def run(
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess:
        full_env = dict(double_env)
        full_env.update(env or {})
        return subprocess.run(
            [str(DOUBLE_BIN), *args],
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def instance(multipass: MultipassFn) -> str:
    name = "shared-" + uuid.uuid4().hex[:6]
    proc = multipass("launch", "--name", name)
    assert proc.returncode == 0, f"launch failed: {proc.stderr}"
    return name
