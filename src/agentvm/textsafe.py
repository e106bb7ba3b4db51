"""Text from the VM is shown to people: control characters replaced, credentials redacted.

``clean()`` replaces every C0/C1 control character (ESC, BEL, OSC, CSI, …) except newline and tab with a
visible ``\\xNN`` escape, so an agent cannot drive the user's terminal (colours, titles, OSC 52 clipboard
writes). ``Redactor`` replaces exact credential values with ``[redacted:NAME]`` in text and in files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
CHUNK = 1024 * 1024
MIN_SECRET = 4  # shorter values would redact ordinary text


def clean(text: str) -> str:
    """``text`` with control characters (other than newline and tab) shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def one_line(text: str, limit: int = 200) -> str:
    """The first line of ``text``, cleaned and cut to ``limit`` characters."""
    lines = clean(text).strip().splitlines()
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


class Redactor:
    """Replaces exact secret values (the credentials of a run, its proxy token) by ``[redacted:NAME]``."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._secrets: dict[str, str] = {}
        self._text: list[tuple[str, str]] = []
        self._bytes: list[tuple[bytes, bytes]] = []
        self.longest = 0
        for name, value in secrets.items():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Redact ``value`` too (e.g. a run's proxy token, known only once the proxy runs)."""
        if not value or len(value) < MIN_SECRET:
            return
        self._secrets[name] = value
        pairs = sorted(self._secrets.items(), key=lambda p: -len(p[1]))  # longest first: no value cut inside another
        self._text = [(v, f"[redacted:{n}]") for n, v in pairs]
        self._bytes = [(v.encode(), r.encode()) for v, r in self._text]
        self.longest = max((len(v) for v, _ in self._bytes), default=0)

    def __bool__(self) -> bool:
        return bool(self._text)

    def text(self, value: str) -> str:
        for secret, replacement in self._text:
            value = value.replace(secret, replacement)
        return value

    def data(self, value: bytes) -> bytes:
        for secret, replacement in self._bytes:
            value = value.replace(secret, replacement)
        return value

    def file(self, path: Path) -> bool:
        """Redact ``path`` in place, streaming (bounded memory); True when something was replaced."""
        if not self or not path.is_file() or path.is_symlink():
            return False
        changed = False
        tmp = path.with_name(path.name + ".redacting")
        keep = self.longest - 1
        with path.open("rb") as src, tmp.open("wb") as dst:
            tail = b""
            while chunk := src.read(CHUNK):
                block = tail + chunk
                done = self.data(block)
                changed = changed or done != block
                # Hold back the last bytes (they may start a secret that continues in the next chunk).
                cut = _safe_cut(done, keep)
                dst.write(done[:cut])
                tail = done[cut:]
            dst.write(tail)
        if changed:
            os.chmod(tmp, path.stat().st_mode & 0o777)
            os.replace(tmp, path)
        else:
            tmp.unlink()
        return changed


def _safe_cut(block: bytes, keep: int) -> int:
    """Where to cut ``block`` so that the last ``keep`` bytes stay for the next round."""
    return max(0, len(block) - keep)
