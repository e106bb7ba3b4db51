#!/usr/bin/env python3
"""`make molecule`: every role's Molecule scenario (`roles/<role>/molecule/<scenario>/`), one `molecule test` each.

Which Multipass: the client named by MULTIPASS_BIN when it is set; else real Multipass (`multipass` on PATH);
else, where it can run (Linux, root, systemd-nspawn), the repository's test double, with a data folder of its
own that is torn down at the end. ROLES=run_vm,agent_run limits the roles. Each scenario gets a Molecule
ephemeral folder of its own under .cache/ (removed afterwards), so runs on one host never share Molecule state.
`molecule test` destroys what it created, also when a step fails; when this script is interrupted it runs
`molecule destroy` for the scenario it was in. Prints each scenario's result and wall time; exits 1 when one
failed, 2 on bad input.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DOUBLE_BIN = REPO / "simulator" / "bin" / "multipass"
DOUBLE_ADMIN = REPO / "simulator" / "bin" / "multipass-double"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DESTROY_TIMEOUT = 900


class UsageError(Exception):
    """Bad input or a missing prerequisite: said before anything is created."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: destroy what the current scenario created, then stop."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def scenarios(roles_filter: str) -> list[tuple[str, str]]:
    """(role, scenario) pairs, sorted; only the roles of ROLES when it is set."""
    found = sorted((p.parents[2].name, p.parent.name) for p in REPO.glob("roles/*/molecule/*/molecule.yml"))
    if not roles_filter.strip():
        return found
    wanted = [r.strip() for r in roles_filter.split(",") if r.strip()]
    known = sorted({role for role, _ in found})
    bad = [r for r in wanted if not NAME.match(r) or r not in known]
    if bad:
        raise UsageError(
            f"ROLES names no role with a Molecule scenario: {', '.join(map(repr, bad))}; choose from {', '.join(known)}"
        )
    return [(role, name) for role, name in found if role in wanted]


def double_reason() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "the test double needs Linux and root"
    if shutil.which("systemd-nspawn") is None:
        return "the test double needs systemd-nspawn (apt-get install systemd-container)"
    return None


def choose_multipass(env: dict[str, str]) -> Path | None:
    """Sets MULTIPASS_BIN (and the double's data folder) in env; returns the double's data folder, if any."""
    if env.get("MULTIPASS_BIN"):
        print(f"molecule: Multipass client {env['MULTIPASS_BIN']} (MULTIPASS_BIN)")
        return None
    real = shutil.which("multipass")
    if real:
        print(f"molecule: real Multipass ({real})")
        return None
    reason = double_reason()
    if reason:
        raise UsageError(
            f"no `multipass` on PATH and {reason}; install Multipass (sudo snap install multipass) or set MULTIPASS_BIN"
        )
    data = REPO / ".cache" / f"molecule-double-{uuid.uuid4().hex[:8]}"
    env["MULTIPASS_BIN"] = str(DOUBLE_BIN)
    env["MULTIPASS_DOUBLE_DATA"] = str(data)
    print(f"molecule: no `multipass` on PATH; the test double, data folder {data}")
    subprocess.run([sys.executable, str(DOUBLE_ADMIN), "build-image"], check=True, timeout=1800)
    return data


def molecule(role: str, args: list[str], env: dict[str, str], timeout: float | None = None) -> int:
    proc = subprocess.Popen(
        [str(VENV_BIN / "molecule"), *args], cwd=REPO / "roles" / role, env=env, start_new_session=True
    )
    try:
        return proc.wait(timeout=timeout)
    except (Interrupted, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise


def run_one(role: str, name: str, env: dict[str, str]) -> tuple[bool, float]:
    ephemeral = REPO / ".cache" / f"molecule-{role}-{name}-{uuid.uuid4().hex[:8]}"
    scenario_env = dict(env, MOLECULE_EPHEMERAL_DIRECTORY=str(ephemeral))
    started = time.monotonic()
    print(f"\n=== {role}/{name}: molecule test --scenario-name {name}", flush=True)
    try:
        code = molecule(role, ["test", "--scenario-name", name], scenario_env)
    except Interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"\nmolecule: interrupted; destroying what {role}/{name} created", file=sys.stderr, flush=True)
        molecule(role, ["destroy", "--scenario-name", name], scenario_env, timeout=DESTROY_TIMEOUT)
        raise
    finally:
        shutil.rmtree(ephemeral, ignore_errors=True)
    return code == 0, time.monotonic() - started


def main() -> int:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    try:
        todo = scenarios(env.get("ROLES", ""))
        if not todo:
            raise UsageError("no scenario found under roles/*/molecule/")
        data = choose_multipass(env)
    except UsageError as exc:
        print(f"molecule: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    results: list[tuple[str, bool, float]] = []
    try:
        for role, name in todo:
            ok, seconds = run_one(role, name, env)
            results.append((f"{role}/{name}", ok, seconds))
    except Interrupted as exc:
        print(f"molecule: stopped by {exc}", file=sys.stderr)
        return 130
    finally:
        if data is not None:
            subprocess.run(
                [sys.executable, str(DOUBLE_ADMIN), "down", "--data", str(data), "--purge", "--quiet"],
                check=False,
                timeout=600,
            )
    print("\nmolecule: scenario                    result   wall time")
    for label, ok, seconds in results:
        print(f"molecule: {label:<28}  {'passed' if ok else 'FAILED':<7}  {seconds:6.0f} s")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
