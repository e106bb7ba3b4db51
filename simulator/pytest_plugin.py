"""pytest fixtures of the Multipass double (registered by the repository's root ``conftest.py``).

``double_env``  (session) environment for anything that must reach the double: ``MULTIPASS_BIN`` points
                at ``simulator/bin/multipass`` and ``MULTIPASS_DOUBLE_DATA`` at a data folder private to
                this test session. The session tears the double down at the end (nothing outlives it).
                Tests that need it are skipped, with the reason, where the double cannot run (not root,
                no systemd-nspawn).
``multipass``   a callable ``multipass(*args, input=None, env=None, timeout=...)`` -> CompletedProcess (text).
``instance``    (session) the name of one Running instance launched for the whole session; tests must not
                stop or delete it (launch their own for that).

Every test that uses ``double_env`` (directly or through another fixture) is marked ``double`` (a
real-instance test). Where the double cannot run, those tests fail with the reason, unless only unit tests
were asked for (``AGENTVM_UNIT_ONLY=1``, as ``make test-unit`` does, which also deselects them). The end of
the run says how many real-instance tests ran. Tests that use the session's built golden (the ``golden``
fixture) share one pytest-xdist group, so one worker builds it and runs them all.
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``double`` mark for tests of real instances. (``make test`` runs the tests of a module on one xdist
    worker, ``--dist loadfile``: see scripts/run_tests.py.)"""
    for item in items:
        if "double_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.double)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            keywords = getattr(report, "keywords", {}) or {}
            if "double" in keywords and (report.when == "call" or outcome in ("error", "skipped")):
                counts[outcome] = counts.get(outcome, 0) + 1
    ran = counts.get("passed", 0) + counts.get("failed", 0)
    detail = ", ".join(f"{n} {k}" for k, n in counts.items()) or "none"
    terminalreporter.write_line(f"real-instance tests (the Multipass double): {ran} ran ({detail})")


@pytest.fixture(scope="session")
def double_env() -> Iterator[dict[str, str]]:
    reason = double_unavailable_reason()
    if reason:
        if os.environ.get("AGENTVM_UNIT_ONLY") == "1":
            pytest.skip(reason)
        pytest.fail(f"real-instance tests cannot run here: {reason} (make test-unit runs the others)", pytrace=False)
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
