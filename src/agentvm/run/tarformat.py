"""Reading tar archives that come from the VM: a small reader of the ustar, GNU and pax header formats that GNU
tar writes, with every size bounded before anything is read into memory. It never follows, creates or
interprets anything: it yields members positioned at their data (extract.py decides what to do with them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BLOCK = 512
CHUNK = 1024 * 1024
MAX_HEADER_DATA = 64 * 1024  # a long name or a pax header: never more than this is read
REGULAR = (b"0", b"\0", b"7")
DIRECTORY = b"5"
LINKS = {b"1": "hard link", b"2": "symbolic link"}
SPECIAL = {b"3": "character device", b"4": "block device", b"6": "FIFO"}


@dataclass
class Member:
    name: str
    kind: bytes
    size: int
    mode: int


class ArchiveError(Exception):
    """The stream is not a readable uncompressed tar archive (at this point)."""


def _number(field_bytes: bytes) -> int:
    if field_bytes and field_bytes[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field_bytes[1:], "big")
        return -value if field_bytes[0] & 0x40 else value
    text = field_bytes.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    if not re.fullmatch(rb"[0-7]+", text):
        raise ArchiveError("a numeric field of a header is not octal")
    return int(text, 8)


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return stored == computed


def read_exact(fh: BinaryIO, size: int) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise ArchiveError("the archive ends in the middle of a header")
    return data


def padding(size: int) -> int:
    return (BLOCK - size % BLOCK) % BLOCK


def skip(fh: BinaryIO, size: int) -> None:
    remaining = size + padding(size)
    while remaining > 0:
        data = fh.read(min(CHUNK, remaining))
        if not data:
            raise ArchiveError("the archive ends in the middle of a member")
        remaining -= len(data)


def _pax(data: bytes) -> dict[str, bytes]:
    """``"%d %s=%s\\n"`` records of a pax header."""
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = data[space + 1 : pos + length]
        pos += length
        key, _, value = record.rstrip(b"\n").partition(b"=")
        out[key.decode("ascii", "replace")] = value
    return out


def members(fh: BinaryIO) -> Iterator[Member]:
    """The archive's members, each positioned at its data (the caller reads or skips ``size`` bytes)."""
    long_name: bytes | None = None
    pax: dict[str, bytes] = {}
    while True:
        header = fh.read(BLOCK)
        if len(header) == 0:
            return
        if header[:2] == b"\x1f\x8b" or header[:3] == b"BZh" or header[:6] == b"\xfd7zXZ\0":
            raise ArchiveError("the archive is compressed; only uncompressed tar is accepted")
        if len(header) != BLOCK:
            raise ArchiveError("the archive ends in the middle of a header")
        if header == b"\0" * BLOCK:
            return
        if not _checksum_ok(header):
            raise ArchiveError("a header's checksum is wrong (not a tar archive, or a damaged one)")
        kind = header[156:157]
        size = _number(header[124:136])
        if size < 0:
            raise ArchiveError("a member has a negative size")
        if kind in (b"L", b"K", b"x", b"g"):
            if size > MAX_HEADER_DATA:
                raise ArchiveError(f"an extended header of {size} bytes is larger than {MAX_HEADER_DATA}")
            data = read_exact(fh, size)
            read_exact(fh, padding(size))
            if kind == b"L":
                long_name = data.split(b"\0", 1)[0]
            elif kind == b"x":
                pax = _pax(data)
            continue  # K (long link name) and g (global pax) do not matter: links are skipped
        name = header[0:100].split(b"\0", 1)[0]
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        if long_name is not None:
            name = long_name
        if "path" in pax:
            name = pax["path"]
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError as exc:
                raise ArchiveError("a pax size is not a number") from exc
        long_name, pax = None, {}
        yield Member(name.decode("utf-8", "surrogateescape"), kind, size, _number(header[100:108]) & 0o7777)
