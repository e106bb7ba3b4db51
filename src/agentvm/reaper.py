"""The reaper: delete and purge every ``<prefix>-run-*`` instance whose run is no longer alive.

A run is alive exactly while its process holds its liveness lock (:mod:`agentvm.slots`), so the reaper
never touches a live run's VM, whatever state the VM is in. Instances that Multipass restarted after a
host reboot have no live process any more and are reaped like any other leftover.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agentvm import slots


@dataclass
class Report:
    deleted: list[str] = field(default_factory=list)
    alive: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stale_locks: int = 0


def _multipass(binary: str, *args: str, env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *args],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def list_instances(binary: str, env: Mapping[str, str]) -> dict[str, str]:
    """name -> state of every instance (deleted ones included)."""
    proc = _multipass(binary, "list", "--format", "json", env=env, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"multipass list failed: {proc.stderr.strip() or proc.returncode}")
    return {item["name"]: item["state"] for item in json.loads(proc.stdout)["list"]}


def targets(names: list[str], prefix: str, include_golden: bool) -> list[str]:
    """Run instances of ``prefix``; with ``include_golden`` also its golden and golden builders."""
    pattern = re.escape(prefix) + (r"-(run-.+|golden|golden-build-.+)$" if include_golden else r"-run-.+$")
    return sorted(n for n in names if re.match(pattern, n))


def remove_stale_locks(directory: Path) -> int:
    removed = 0
    for lock in sorted((directory / "alive").glob("*.lock")):
        removed += slots.remove_if_stale(lock)
    with slots._queue_lock(directory):
        removed += sum(slots.remove_if_stale(t) for t in sorted((directory / "queue").iterdir()))
    return removed


def reap(
    binary: str,
    env: Mapping[str, str],
    prefix: str,
    include_golden: bool = False,
    directory: Path | None = None,
) -> Report:
    directory = directory or slots.state_dir(env)
    report = Report()
    for name in targets(list(list_instances(binary, env)), prefix, include_golden):
        if "-run-" in name and slots.is_locked(slots.alive_lock(directory, name)):
            report.alive.append(name)
            continue
        proc = _multipass(binary, "delete", "--purge", name, env=env)
        if proc.returncode == 0 or "does not exist" in proc.stderr:
            report.deleted.append(name)
        else:
            report.failed[name] = proc.stderr.strip() or f"multipass delete exited {proc.returncode}"
    report.stale_locks = remove_stale_locks(directory)
    return report


def format_report(report: Report) -> str:
    lines = [f"deleted: {name}" for name in report.deleted]
    lines += [f"kept (run alive): {name}" for name in report.alive]
    lines += [f"FAILED to delete {name}: {error}" for name, error in report.failed.items()]
    lines.append(
        f"reaped {len(report.deleted)} instance(s), {len(report.alive)} live run(s) untouched, "
        f"{report.stale_locks} stale lock(s) removed"
    )
    return "\n".join(lines)


def opportunistic(binary: str, env: Mapping[str, str] = os.environ, prefix: str = "agentvm") -> Report | None:
    """Reap before a new run; never fails the run (the reaper is a best effort here)."""
    try:
        return reap(binary, env, prefix)
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired):
        return None
