"""The one extractor for everything that comes back from the VM (its tar archives are hostile).

Not based on ``tarfile``: tarformat.py reads the headers, with every size bounded before anything is read into
memory. Only regular files and directories are created, each
under a directory file descriptor with ``O_NOFOLLOW`` (and files with ``O_EXCL``), so no member can write
outside the destination, whatever links, ``..``, absolute names or duplicates the archive holds. Links,
devices and FIFOs are skipped; names that are absolute, contain ``..`` or control characters, are too
long or too deep are refused; caps on total bytes, members and single files are enforced while reading.
Everything skipped or truncated becomes a warning; nothing here raises on bad input.

The folders of the previous member stay open, so a member is reached by opening only the levels it does not
share with the previous one (tar writes folders depth first): the cost of an archive is about its number of
members, not members times depth, and MAX_DEPTH bounds the worst case (an archive that alternates between
unrelated deep names).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from agentvm.run.tarformat import (
    CHUNK,
    DIRECTORY,
    LINKS,
    REGULAR,
    SPECIAL,
    ArchiveError,
    Member,
    members,
    padding,
    skip,
)

MAX_NAME = 4096
MAX_COMPONENT = 255
MAX_DEPTH = 64  # folder levels of one name
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Limits:
    max_bytes: int  # all files together
    max_members: int = 100_000
    max_file: int | None = None  # one file (default: max_bytes)


@dataclass
class Report:
    files: int = 0
    directories: int = 0
    bytes: int = 0
    warnings: list[dict[str, str]] = field(default_factory=list)

    def warn(self, code: str, path: str, message: str) -> None:
        if len(self.warnings) < 200:
            self.warnings.append({"code": code, "path": path, "message": message})
        elif len(self.warnings) == 200:
            self.warnings.append({"code": "too_many_warnings", "path": "", "message": "further warnings left out"})


# -- writing ----------------------------------------------------------------------------------------


def safe_parts(name: str) -> list[str] | str:
    """The path components of a member name, or the reason it is refused."""
    if _BAD_NAME.search(name):
        return "the name contains control characters"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        return f"the name is longer than {MAX_NAME} bytes"
    if name.startswith("/"):
        return "the name is absolute"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return "the name contains .."
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_COMPONENT for p in parts):
        return f"a part of the name is longer than {MAX_COMPONENT} bytes"
    if len(parts) > MAX_DEPTH:
        return f"the name is more than {MAX_DEPTH} levels deep"
    return parts


class Writer:
    """Creates directories and files below one destination directory, through directory file descriptors.
    The directories of the last parent path stay open (``_chain``) for the next member."""

    def __init__(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self._chain: list[tuple[str, int]] = []

    def close(self) -> None:
        self._cut(0)
        os.close(self.root)

    def _cut(self, keep: int) -> None:
        for _part, fd in self._chain[keep:]:
            os.close(fd)
        del self._chain[keep:]

    def _parent(self, parts: list[str]) -> int:
        """An open fd (the caller's) of the directory that holds ``parts[-1]``, creating real directories on
        the way; only the levels not shared with the previous member are opened."""
        wanted = parts[:-1]
        shared = 0
        while shared < min(len(wanted), len(self._chain)) and self._chain[shared][0] == wanted[shared]:
            shared += 1
        self._cut(shared)
        for part in wanted[shared:]:
            fd = self._chain[-1][1] if self._chain else self.root
            self._chain.append((part, self._open_dir(fd, part)))
        return os.dup(self._chain[-1][1] if self._chain else self.root)

    @staticmethod
    def _open_dir(fd: int, part: str) -> int:
        """The directory ``part`` in ``fd`` (created if missing; never a link), opened; ``fd`` stays open."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            return os.open(part, flags, dir_fd=fd)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            return os.open(part, flags, dir_fd=fd)

    def _enter(self, fd: int, part: str) -> int:
        try:
            return self._open_dir(fd, part)
        finally:
            os.close(fd)

    def directory(self, parts: list[str]) -> None:
        os.close(self._enter(self._parent(parts), parts[-1]))

    def open_file(self, parts: list[str], mode: int) -> int:
        parent = self._parent(parts)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            return os.open(parts[-1], flags, 0o755 if mode & 0o111 else 0o644, dir_fd=parent)
        finally:
            os.close(parent)


def _copy(fh: BinaryIO, out: int, size: int, allowed: int) -> int:
    """Copy ``size`` bytes of member data, writing at most ``allowed``; returns the bytes written."""
    written = 0
    remaining = size
    while remaining > 0:
        data = fh.read(min(CHUNK, remaining))
        if not data:
            raise ArchiveError("the archive ends in the middle of a member")
        remaining -= len(data)
        keep = data[: max(0, allowed - written)]
        if keep:
            os.write(out, keep)
            written += len(keep)
    fh.read(padding(size))
    return written


def extract(
    archive: Path,
    dest: Path,
    limits: Limits,
    report: Report | None = None,
    accept: Callable[[str], str | None] | None = None,
) -> Report:
    """Extract ``archive`` into ``dest`` within ``limits``. ``accept`` maps a member name to the name to write
    (None: skip it silently). Returns the report; never raises for anything the archive holds."""
    report = report or Report()
    max_file = limits.max_file if limits.max_file is not None else limits.max_bytes
    try:
        fh = archive.open("rb")
    except OSError as exc:
        report.warn("unreadable_archive", archive.name, f"cannot open {archive.name}: {exc.strerror}")
        return report
    writer = Writer(dest)
    count = 0
    try:
        for member in members(fh):
            count += 1
            if count > limits.max_members:
                report.warn("too_many_members", "", f"more than {limits.max_members} members: the rest is skipped")
                break
            _one(fh, member, writer, report, limits.max_bytes, max_file, accept)
    except ArchiveError as exc:
        report.warn("bad_archive", archive.name, f"{archive.name}: {exc}; the rest of it is skipped")
    except OSError as exc:
        report.warn("write_failed", archive.name, f"{archive.name}: {exc}; the rest of it is skipped")
    finally:
        writer.close()
        fh.close()
    return report


def _one(
    fh: BinaryIO,
    member: Member,
    writer: Writer,
    report: Report,
    max_bytes: int,
    max_file: int,
    accept: Callable[[str], str | None] | None,
) -> None:
    kind = member.kind
    name = accept(member.name) if accept else member.name
    data_size = member.size if kind in REGULAR else (0 if kind == DIRECTORY else member.size)
    if name is None:
        skip(fh, data_size)
        return
    parts = safe_parts(name)
    shown = name[:200]
    if isinstance(parts, str):
        report.warn("unsafe_name", shown, f"skipped {shown!r}: {parts}")
        skip(fh, data_size)
        return
    if not parts:
        skip(fh, data_size)
        return
    if kind in LINKS or kind in SPECIAL:
        what = LINKS.get(kind) or SPECIAL[kind]
        report.warn("skipped_" + what.replace(" ", "_"), shown, f"skipped {shown}: a {what}")
        skip(fh, data_size)
        return
    if kind == DIRECTORY:
        try:
            writer.directory(parts)
            report.directories += 1
        except OSError as exc:
            report.warn("not_created", shown, f"skipped {shown}: {exc.strerror}")
        skip(fh, data_size)
        return
    if kind not in REGULAR:
        report.warn("skipped_unknown", shown, f"skipped {shown}: unknown member type {kind!r}")
        skip(fh, data_size)
        return
    _file(fh, member, parts, shown, writer, report, max_bytes, max_file)


def _file(
    fh: BinaryIO,
    member: Member,
    parts: list[str],
    shown: str,
    writer: Writer,
    report: Report,
    max_bytes: int,
    max_file: int,
) -> None:
    room = max(0, min(max_file, max_bytes - report.bytes))
    if room == 0 and member.size > 0:
        report.warn("over_limit", shown, f"skipped {shown}: the results limit ({max_bytes} bytes) is reached")
        skip(fh, member.size)
        return
    try:
        out = writer.open_file(parts, member.mode)
    except FileExistsError:
        report.warn("duplicate", shown, f"skipped {shown}: an entry of that name came earlier")
        skip(fh, member.size)
        return
    except OSError as exc:
        report.warn("not_created", shown, f"skipped {shown}: {exc.strerror}")
        skip(fh, member.size)
        return
    try:
        written = _copy(fh, out, member.size, room)
    finally:
        os.close(out)
    report.files += 1
    report.bytes += written
    if written < member.size:
        report.warn("truncated", shown, f"{shown} truncated to {written} of {member.size} bytes (results limit)")


def is_plain_file(path: Path) -> bool:
    """A regular file that is not a link (what extraction creates)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
