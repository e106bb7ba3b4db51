"""The workspace a run works on: listed and checked before anything is created, packed from the host folder
(respecting .gitignore) into the run's bundle, never written back."""

from __future__ import annotations

import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from agentvm.errors import UsageError

MIB = 1024 * 1024


@dataclass(frozen=True)
class Listing:
    """The files of a workspace (relative paths), found and measured once."""

    root: Path
    files: tuple[str, ...]
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


def _walk_files(root: Path, limit: int) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        rel = Path(dirpath).relative_to(root)
        out.extend(str(rel / f) if str(rel) != "." else f for f in filenames)
        if len(out) > limit:
            break  # enough to refuse it; do not walk a whole disk
    return out


def listing(root: Path, max_bytes: int, max_files: int) -> Listing:
    """List and measure ``root``; refuse absurd sizes (UsageError) before anything is copied or created."""
    files = _git_files(root)
    if files is None:
        files = _walk_files(root, max_files)
    kept = sorted(f for f in files if os.path.lexists(root / f) and not (root / f).is_dir())
    if len(kept) > max_files:
        raise UsageError(
            f"WORKSPACE {root} has more than {max_files} files (AGENTVM_WORKSPACE_MAX_FILES): "
            "point it at a smaller folder or add the bulk to .gitignore"
        )
    size = sum((root / f).lstat().st_size for f in kept)
    if size > max_bytes:
        raise UsageError(
            f"WORKSPACE {root} holds {size // MIB} MiB (limit {max_bytes // MIB} MiB, AGENTVM_WORKSPACE_MAX_MB): "
            "add large files to .gitignore or choose a smaller folder"
        )
    return Listing(root=root, files=tuple(kept), bytes=size)


def pack(found: Listing, dest: Path) -> None:
    """Write ``dest`` (.tar.gz) with the listed files (links are stored as links, never followed)."""
    with tarfile.open(dest, "w:gz") as tar:
        for name in found.files:
            tar.add(found.root / name, arcname=name, recursive=False)
