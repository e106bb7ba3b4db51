"""The run's ``egress.log`` (one JSON line per request through the host proxy) and its counters.

A line holds only: ``time`` (UTC, ISO 8601), ``kind`` (``api`` | ``connect`` | ``http``), ``upstream`` (the API
upstream's name, api only), ``method``, ``host``, ``port``, ``path`` (no query string, no fragment; null for
CONNECT), ``status``, ``bytes_in`` (received from the VM), ``bytes_out`` (sent to the VM), ``duration_ms`` and
``decision`` (``allowed`` | ``denied`` | ``unauthorized`` | ``error``). Never a header, a body or a query string:
those are where tokens and keys travel. Values that came from the VM are bounded in length.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Decision = Literal["allowed", "denied", "unauthorized", "error"]
MAX_HOST = 255
MAX_PATH = 512


@dataclass
class ProxyCounters:
    """Totals for one proxy since it started (all kinds together; ``api_*``/``egress_*`` split them)."""

    allowed: int = 0
    denied: int = 0
    unauthorized: int = 0
    errors: int = 0
    api_requests: int = 0
    egress_requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def clean_path(raw: str | None) -> str | None:
    """The path of a request target without its query string or fragment, bounded."""
    if raw is None:
        return None
    path = raw.split("?", 1)[0].split("#", 1)[0]
    return path[:MAX_PATH]


@dataclass
class Entry:
    """The facts of one request, filled in as it proceeds; its duration runs from creation to ``record``."""

    kind: str = "http"
    method: str = "-"
    host: str = "-"
    port: int | None = None
    path: str | None = None
    status: int = 0
    decision: Decision = "error"
    bytes_in: int = 0
    bytes_out: int = 0
    upstream: str | None = None
    started: float = field(default_factory=time.monotonic, repr=False)


class EgressLog:
    """Appends entries to a file (mode 0600) and keeps the counters; safe to call from any thread."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._counters = ProxyCounters()
        self._fh: Any = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._fh = os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def record(self, entry: Entry) -> None:
        line = json.dumps(self._line(entry), ensure_ascii=True, separators=(",", ":"))
        with self._lock:
            self._count(entry)
            if self._fh is not None:
                self._fh.write(line + "\n")

    def _count(self, entry: Entry) -> None:
        c = self._counters
        if entry.decision == "allowed":
            c.allowed += 1
        elif entry.decision == "denied":
            c.denied += 1
        elif entry.decision == "unauthorized":
            c.unauthorized += 1
        else:
            c.errors += 1
        if entry.kind == "api":
            c.api_requests += 1
        else:
            c.egress_requests += 1
        c.bytes_in += entry.bytes_in
        c.bytes_out += entry.bytes_out

    @staticmethod
    def _line(entry: Entry) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line: dict[str, Any] = {"time": now, "kind": entry.kind}
        if entry.upstream is not None:
            line["upstream"] = entry.upstream
        line.update(
            method=entry.method[:16],
            host=entry.host[:MAX_HOST],
            port=entry.port,
            path=clean_path(entry.path),
            status=entry.status,
            bytes_in=entry.bytes_in,
            bytes_out=entry.bytes_out,
            duration_ms=round((time.monotonic() - entry.started) * 1000, 1),
            decision=entry.decision,
        )
        return line

    def counters(self) -> ProxyCounters:
        with self._lock:
            return ProxyCounters(**asdict(self._counters))

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
