"""Unpacking what was fetched from the VM into the documented layout of the run folder, within the limits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agentvm import textsafe
from agentvm.run.extract import Limits, Report, extract, is_plain_file

#: Members of results.tar (collect.sh) and where they go: the run folder, or staging for reading.
TO_RUN_DIR = ("stdout.log", "stderr.log", "workspace.patch", "workspace-commits.mbox")
TO_STAGING = ("agent-summary.json", "agent_version", "commits", "output.tar")


def _accept(name: str) -> str | None:
    plain = name[2:] if name.startswith("./") else name
    return plain if plain in TO_RUN_DIR or plain in TO_STAGING else None


def collect(staging: Path, run_dir: Path, max_bytes: int, max_members: int = 100_000) -> Report:
    """Extract ``staging/results.tar`` (and ``diagnostics.tar``) into ``run_dir``; returns the report
    (warnings for everything skipped or truncated). ``staging/vm`` keeps the VM's claims for reading."""
    report = Report()
    limits = Limits(max_bytes=max_bytes, max_members=max_members)
    vm = staging / "vm"
    results = staging / "results.tar"
    if results.exists():
        if results.stat().st_size >= max_bytes:
            report.warn(
                "results_cut",
                "results.tar",
                f"what the VM returned reached the limit of {max_bytes} bytes "
                "(AGENTVM_MAX_RESULT_MB) and was cut there",
            )
        extract(results, vm, limits, report, accept=_accept)
        results.unlink()
        for name in TO_RUN_DIR:
            if is_plain_file(vm / name):
                os.replace(vm / name, run_dir / name)
        inner = vm / "output.tar"
        if is_plain_file(inner):
            report.bytes -= inner.stat().st_size  # counted when it came; count its contents instead
            extract(inner, run_dir / "output", limits, report)
            inner.unlink()
    diagnostics = staging / "diagnostics.tar"
    if diagnostics.exists():
        extract(diagnostics, run_dir / "diagnostics", Limits(max_bytes=64 * 1024 * 1024), report)
        diagnostics.unlink()
    return report


def redact_tree(root: Path, redactor: textsafe.Redactor) -> list[str]:
    """Redact the secrets from every regular file below ``root``, and from the names of its files and folders
    (the agent chose them); the entries changed (relative paths, as they were)."""
    changed = []
    if not redactor:
        return changed
    for dirpath, dirs, files in os.walk(root, topdown=False):  # a folder is renamed after what it holds
        for name in files:
            path = Path(dirpath) / name
            if is_plain_file(path) and redactor.file(path):
                changed.append(str(path.relative_to(root)))
        for name in [*files, *dirs]:
            clean = redactor.text(name)
            if clean != name:
                _rename_free(Path(dirpath), name, clean)
                changed.append(str((Path(dirpath) / name).relative_to(root)))
    return changed


def _rename_free(folder: Path, name: str, new: str) -> None:
    """Rename ``folder/name`` to ``new`` (or ``new.1``, ``new.2``, ... when taken), without following links."""
    target, n = new, 0
    while os.path.lexists(folder / target):
        n += 1
        target = f"{new}.{n}"
    os.rename(folder / name, folder / target)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
