"""The roles' Molecule scenarios (roles/<role>/molecule/default), run with `molecule test` against the double.

Each test reads Molecule's own report (NO_COLOR output): the steps it ran and their results, and the play
recaps inside each step (the first converge changed the instance, the idempotence converge changed nothing,
verify checked the instance). Every test also checks that nothing the scenario created is left in the
double, including after a failed step. The double's data folder is the pytest session's (``double_env``), the
Molecule ephemeral folder is the test's own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import REPO

pytestmark = [pytest.mark.double, pytest.mark.slow]

VENV_BIN = REPO / ".venv" / "bin"
MOLECULE = str(VENV_BIN / "molecule")
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
SECRET_MARKER = "agentvm-molecule-secret-marker"  # the stand-in credential of roles/agent_run/molecule


@dataclass
class Report:
    code: int
    output: str
    seconds: float

    def steps(self) -> list[tuple[str, str]]:
        """(step, result) in order, from Molecule's DETAILS block (when a step fails, Molecule prints no DETAILS
        block: then from its "[scenario > step] Executed: result" lines)."""
        if "\nDETAILS" not in self.output:
            plain = re.sub(r"\x1b\[[0-9;]*m", "", self.output)
            return re.findall(r"\[\S+ > (\w+)\] Executed: (\w+)", plain)
        block = self.output.split("\nDETAILS", 1)[1].split("\n\n", 1)[0]
        return re.findall(r"^\S+ > (\w+): Executed: (\w+)", block, re.M)

    def sections(self, step: str) -> list[str]:
        """The output of each run of a step (destroy runs twice)."""
        pattern = rf"\[\S+ > {step}\] Executing\n(.*?)\[\S+ > {step}\] Executed"
        return re.findall(pattern, self.output, re.S)

    def recap(self, step: str, index: int = 0) -> dict[str, dict[str, int]]:
        rows = RECAP.findall(self.sections(step)[index])
        keys = ("ok", "changed", "unreachable", "failed")
        return {host: dict(zip(keys, map(int, counts), strict=True)) for host, *counts in rows}

    def tail(self) -> str:
        return self.output[-6000:]


def molecule_env(double_env: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(double_env)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        MOLECULE_EPHEMERAL_DIRECTORY=str(tmp_path / "molecule"),
        NO_COLOR="1",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        COLUMNS="200",
    )
    env.update(extra)
    return env


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 1500) -> Report:
    started = time.monotonic()
    # One stream: Molecule logs its steps on stderr, Ansible's output between them comes on stdout.
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Report(proc.returncode, proc.stdout, time.monotonic() - started)


def molecule(role: str, env: dict[str, str], *args: str, timeout: float = 1500) -> Report:
    return run([MOLECULE, *args], REPO / "roles" / role, env, timeout)


def leftovers(multipass: Callable[..., subprocess.CompletedProcess]) -> list[str]:
    proc = multipass("list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return [i["name"] for i in json.loads(proc.stdout)["list"] if i["name"].startswith("molecule-")]


def figure(capsys: pytest.CaptureFixture[str], label: str, report: Report) -> None:
    with capsys.disabled():
        print(f"\n{label}: {report.seconds:.0f} s")


def all_successful(report: Report, expected: list[str]) -> None:
    assert report.code == 0, report.tail()
    assert report.steps() == [(step, "Successful") for step in expected], report.tail()


def test_run_vm_scenario_through_make(double_env, multipass, tmp_path, capsys):
    """`make molecule ROLES=run_vm`: the stand-in golden is cloned and started by the role, twice without change."""
    env = molecule_env(double_env, tmp_path)
    report = run(["make", "--no-print-directory", "molecule", "ROLES=run_vm"], REPO, env)
    figure(capsys, "molecule test run_vm (make molecule)", report)
    all_successful(report, ["destroy", "syntax", "create", "converge", "idempotence", "verify", "destroy"])
    assert re.search(r"^molecule: run_vm/default\s+passed", report.output, re.M), report.tail()
    converge = report.recap("converge")["localhost"]
    assert converge["changed"] >= 2 and converge["failed"] == 0, converge  # cloned, started
    assert report.recap("idempotence") == {"localhost": {**converge, "changed": 0}}
    verify = report.recap("verify")
    assert verify["localhost"]["failed"] == 0 and verify["molecule-run-vm"]["ok"] == 2, verify
    assert leftovers(multipass) == []


def test_failed_converge_still_destroys_everything(double_env, multipass, tmp_path):
    """Every clone fails (an injected Multipass error, also on the role's retry): the test fails at converge, and
    destroy still runs."""
    env = molecule_env(double_env, tmp_path, MULTIPASS_DOUBLE_FAIL="clone=error")
    report = molecule("run_vm", env, "test")
    assert report.code != 0, report.tail()
    steps = report.steps()
    assert ("converge", "Failed") in steps, steps
    assert steps[-1] == ("destroy", "Successful"), steps
    assert "idempotence" not in dict(steps) and "verify" not in dict(steps), steps
    assert leftovers(multipass) == []


def test_run_vm_verify_fails_on_a_stopped_clone(double_env, multipass, tmp_path):
    """verify is not a formality: with the clone stopped behind the role's back it fails, naming the check."""
    env = molecule_env(double_env, tmp_path)
    try:
        converged = molecule("run_vm", env, "converge")
        assert converged.code == 0, converged.tail()
        proc = multipass("stop", "molecule-run-vm")
        assert proc.returncode == 0, proc.stderr
        report = molecule("run_vm", env, "verify")
        assert report.code != 0, report.tail()
        assert report.steps() == [("verify", "Failed")], report.tail()
        assert "assertion: _run_vm_molecule_info.instances[_run_vm_molecule_clone].state == 'Running'" in report.output
    finally:
        destroyed = molecule("run_vm", env, "destroy")
    assert destroyed.code == 0, destroyed.tail()
    assert leftovers(multipass) == []


def test_agent_run_scenario(double_env, multipass, tmp_path, capsys):
    """The role runs a stand-in agent from a bundle built on the controller and fetches results.tar."""
    report = molecule("agent_run", molecule_env(double_env, tmp_path), "test")
    figure(capsys, "molecule test agent_run", report)
    all_successful(report, ["destroy", "syntax", "create", "prepare", "converge", "verify", "destroy"])
    assert report.recap("converge")["localhost"]["failed"] == 0
    verify = report.recap("verify")
    assert verify["localhost"]["failed"] == 0 and verify["molecule-agent-run"]["ok"] == 2, verify
    # The credential reached the agent (verify checks "secret: present") but never Molecule's or Ansible's output.
    assert SECRET_MARKER not in report.output
    assert leftovers(multipass) == []


def test_golden_image_scenario(double_env, multipass, tmp_path, capsys):
    """plan and verify_golden against a sealed stand-in golden; the plan changes nothing when run again."""
    report = molecule("golden_image", molecule_env(double_env, tmp_path), "test")
    figure(capsys, "molecule test golden_image", report)
    all_successful(report, ["destroy", "syntax", "create", "converge", "idempotence", "verify", "destroy"])
    converge = report.sections("converge")[0]
    assert "Building molecule-gi-golden: the build inputs changed" in converge
    assert "Verified a clone of molecule-gi-golden" in converge
    idempotence = report.sections("idempotence")[0]
    assert "Plan | Decide whether to build" in idempotence
    assert "Verify golden |" not in idempotence  # tagged molecule-idempotence-notest: it clones by design
    assert report.recap("idempotence")["localhost"]["changed"] == 0
    assert report.recap("verify")["localhost"]["failed"] == 0
    assert leftovers(multipass) == []


@pytest.mark.timeout(3000)
def test_golden_provision_scenario(double_env, multipass, tmp_path, capsys):
    """`molecule test -s default` in roles/golden_provision: converge provisions a fresh instance, the second
    converge changes nothing, verify finds the tools, folders and settings, and destroy removes the instance."""
    report = molecule("golden_provision", molecule_env(double_env, tmp_path), "test", "-s", "default", timeout=2700)
    figure(capsys, "molecule test golden_provision", report)
    all_successful(report, ["destroy", "syntax", "create", "converge", "idempotence", "verify", "destroy"])
    host = "molecule-golden-provision"
    converge = report.recap("converge")[host]
    # A fresh instance really changes: packages, uv, the Python tools, folders, subordinate IDs, settings.
    assert converge["changed"] >= 5 and converge["failed"] == 0, converge
    idempotence = report.recap("idempotence")
    assert idempotence[host]["changed"] == 0 and idempotence[host]["failed"] == 0, idempotence
    assert idempotence[host]["ok"] >= 10, idempotence  # the role ran (its checks), it did not skip itself
    verify = report.recap("verify")[host]
    assert verify["failed"] == 0 and verify["ok"] == 7, verify
    assert leftovers(multipass) == []
