"""Helpers shared by the collection's integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
ANSIBLE_BIN = Path(sys.executable).parent

# Host aliases of one instance: the same checks run with pipelining on and off.
PIPELINING = {"pipelining": "true", "nopipelining": "false"}


def write_hosts(path: Path, instance: str, extra: str = "") -> Path:
    lines = ["[vms]"]
    for alias, value in PIPELINING.items():
        lines.append(f"{instance}-{alias} ansible_host={instance} ansible_pipelining={value}")
    lines += [
        "[vms:vars]",
        "ansible_connection=agentvm.multipass.multipass",
        "ansible_python_interpreter=/usr/bin/python3",
        # bounds every exec: a regression of the exit-4 guard would otherwise loop forever
        "ansible_multipass_command_timeout=300",
        extra,
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def output(proc) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-3000:]}"
