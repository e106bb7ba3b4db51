"""The workspace a run works on: packed from the host folder (respecting .gitignore), never written back."""

from __future__ import annotations

import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from agentvm.errors import UsageError

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_FILES = 100_000


@dataclass(frozen=True)
class Packed:
    archive: Path
    files: int
    bytes: int


def _git_files(root: Path) -> list[str] | None:
    """Tracked plus untracked-but-not-ignored files when ``root`` is in a git work tree, else None."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return [p for p in proc.stdout.decode("utf-8", errors="surrogateescape").split("\0") if p]


def _walk_files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        rel = Path(dirpath).relative_to(root)
        out.extend(str(rel / f) if str(rel) != "." else f for f in filenames)
    return out


def list_files(root: Path) -> list[str]:
    files = _git_files(root)
    if files is None:
        files = _walk_files(root)
    return sorted(f for f in files if os.path.lexists(root / f) and not (root / f).is_dir())


def pack(root: Path, dest: Path, max_bytes: int = DEFAULT_MAX_BYTES, max_files: int = DEFAULT_MAX_FILES) -> Packed:
    """Write ``dest`` (.tar.gz) with the workspace's files; refuse absurd sizes before copying anything."""
    files = list_files(root)
    if len(files) > max_files:
        raise UsageError(f"WORKSPACE {root} has {len(files)} files (limit {max_files}): point it at a smaller folder")
    size = sum((root / f).lstat().st_size for f in files)
    if size > max_bytes:
        raise UsageError(
            f"WORKSPACE {root} holds {size // (1024 * 1024)} MiB (limit {max_bytes // (1024 * 1024)} MiB, "
            "AGENTVM_WORKSPACE_MAX_MB): add large files to .gitignore or choose a smaller folder"
        )
    with tarfile.open(dest, "w:gz") as tar:
        for name in files:
            tar.add(root / name, arcname=name, recursive=False)
    return Packed(archive=dest, files=len(files), bytes=size)
