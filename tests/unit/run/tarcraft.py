"""Hand-made tar archives for the extractor's tests: the attacker writes headers byte by byte."""

from __future__ import annotations

import io
import tarfile

BLOCK = 512


def header(name: bytes, kind: bytes = b"0", size: int = 0, link: bytes = b"", mode: int = 0o644) -> bytes:
    """One ustar header (checksum filled in); ``name`` may be anything the attacker likes (up to 100 bytes)."""
    h = bytearray(BLOCK)
    h[0 : len(name)] = name[:100]
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = kind
    h[157 : 157 + len(link)] = link[:100]
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def pad(data: bytes) -> bytes:
    return data + b"\0" * ((BLOCK - len(data) % BLOCK) % BLOCK)


def member(name: bytes, data: bytes = b"", kind: bytes = b"0", link: bytes = b"") -> bytes:
    size = len(data) if kind in (b"0", b"L", b"x", b"K") else 0
    return header(name, kind, size, link) + (pad(data) if size else b"")


def long_name(name: bytes, data: bytes = b"") -> bytes:
    """A GNU long-name member followed by the file it names."""
    return member(b"././@LongLink", name + b"\0", kind=b"L") + member(b"placeholder", data)


def pax_record(key: bytes, value: bytes) -> bytes:
    payload = b" " + key + b"=" + value + b"\n"
    n = len(payload) + 1
    while len(str(n)) + len(payload) != n:
        n = len(str(n)) + len(payload)
    return str(n).encode() + payload


def pax(records: dict[bytes, bytes], name: bytes = b"x", data: bytes = b"") -> bytes:
    body = b"".join(pax_record(k, v) for k, v in records.items())
    return member(b"PaxHeader", body, kind=b"x") + member(name, data)


def end() -> bytes:
    return b"\0" * (2 * BLOCK)


def with_tarfile(entries: list[tuple[str, bytes]]) -> bytes:
    """A well-formed archive written by Python's tarfile (for the happy path)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
