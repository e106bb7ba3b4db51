"""Bounded readers of a run folder for ``agentvm mcp``: the record, the patch, the output list, a log's tail.

A run folder holds what came back from a hostile VM (sanitised on the way in, but of any size): every reader
here has a limit, opens regular files only (never through a symbolic link) and says when it cut something.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentvm.run.progress import PHASES

RECORD_LIMIT = 16 * 1024 * 1024
TEXT_LIMIT = 64 * 1024
PATCH_LIMIT = 256 * 1024
OUTPUT_ENTRIES = 200
TAIL_LIMIT = 64 * 1024
_PHASE_LINE = re.compile(r"^\[\s*[0-9.]+s\] ([a-z]+) \.\.\.$")


@dataclass(frozen=True)
class Bounded:
    text: str | None  # None: the file is not there (or not a regular file)
    size: int
    truncated: bool


def _open_regular(path: Path) -> int | None:
    """A read-only descriptor of ``path`` if it is a regular file reached without following a link."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def read_bounded(path: Path, limit: int, *, tail: bool = False) -> Bounded:
    """At most ``limit`` bytes of ``path`` as text (the first ones, or the last ones with ``tail``); invalid
    UTF-8 is replaced, and a character cut at the limit is dropped."""
    fd = _open_regular(path)
    if fd is None:
        return Bounded(None, 0, False)
    with contextlib.closing(os.fdopen(fd, "rb")) as fh:
        size = os.fstat(fh.fileno()).st_size
        if tail and size > limit:
            fh.seek(size - limit)
        data = fh.read(limit + (0 if tail else 1))
    truncated = size > limit or len(data) > limit
    data = data[:limit]
    text = data.decode("utf-8", errors="replace")
    if truncated and text.endswith("\ufffd"):
        text = text.rstrip("\ufffd")
    return Bounded(text, size, truncated)


def cut(text: str | None, limit: int = TEXT_LIMIT) -> tuple[str | None, bool]:
    """``text`` shortened to ``limit`` characters; and whether it was."""
    if text is None or len(text) <= limit:
        return text, False
    return text[:limit], True


def load_record(folder: Path) -> dict[str, Any] | None:
    """The run's result.json (None while there is none, or when it is unreadable or too large)."""
    found = read_bounded(folder / "result.json", RECORD_LIMIT)
    if found.text is None or found.truncated:
        return None
    try:
        record = json.loads(found.text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def list_outputs(folder: Path, limit: int = OUTPUT_ENTRIES) -> tuple[list[dict[str, Any]], bool]:
    """The regular files under ``folder`` (``output/``): relative names and sizes, sorted, at most ``limit``;
    links are neither listed nor followed."""
    found: list[dict[str, Any]] = []
    if not folder.is_dir() or folder.is_symlink():
        return found, False
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            with contextlib.suppress(OSError):
                info = path.lstat()
                if stat.S_ISREG(info.st_mode):
                    found.append({"name": path.relative_to(folder).as_posix(), "bytes": info.st_size})
            if len(found) > limit:
                return sorted(found[:limit], key=lambda e: e["name"]), True
    return sorted(found, key=lambda e: e["name"]), False


def last_phase(log: Path) -> str | None:
    """The last phase a run's terminal output entered (``[   3.1s] clone ...``), from the log's tail."""
    found = read_bounded(log, TAIL_LIMIT, tail=True)
    phase = None
    for line in (found.text or "").splitlines():
        match = _PHASE_LINE.match(line.strip())
        if match and match.group(1) in PHASES:
            phase = match.group(1)
    return phase


def last_error(log: Path, limit: int = 2000) -> str | None:
    """The last ``agentvm: ...`` line of a log (what a rejected run said), shortened."""
    found = read_bounded(log, TAIL_LIMIT, tail=True)
    lines = [line for line in (found.text or "").splitlines() if line.startswith("agentvm: ")]
    return lines[-1][len("agentvm: ") :][:limit] if lines else None


def folder_result(folder: Path | None, record: dict[str, Any]) -> dict[str, Any]:
    """run_result's fields from a finished run's record and folder (None: not readable here), all bounded."""
    text, text_cut = cut(record.get("result_text") if isinstance(record.get("result_text"), str) else None)
    patch = read_bounded(folder / "workspace.patch", PATCH_LIMIT) if folder else Bounded(None, 0, False)
    outputs, outputs_cut = list_outputs(folder / "output") if folder else ([], False)
    error = record.get("error") if isinstance(record.get("error"), dict) else None
    return {
        "status": record.get("status"),
        "exit_code": record.get("exit_code"),
        "result_text": text,
        "result_text_truncated": text_cut,
        "patch": patch.text,
        "patch_bytes": patch.size,
        "patch_truncated": patch.truncated,
        "outputs": outputs,
        "outputs_truncated": outputs_cut,
        "error": {k: cut(str(error.get(k) or ""), 2000)[0] for k in ("phase", "message", "hint")} if error else None,
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "folder": str(folder) if folder else None,
    }
