"""Trace, injected latency and injected failures, all driven by environment variables.

``MULTIPASS_DOUBLE_TRACE=<file>``
    Append one JSON line per invocation: ``{"argv", "start", "end", "exit_code", "pid"}``.

``MULTIPASS_DOUBLE_LATENCY``
    Minimum wall time per command, in seconds: ``realistic`` (launch 40, clone 8, start 12, restart 15,
    stop 5, delete 2, snapshot 2, restore 2) and/or ``cmd=seconds`` items, comma-separated, later items
    win: ``realistic,clone=1``. Near zero when unset.

``MULTIPASS_DOUBLE_FAIL``
    Comma-separated ``cmd[=mode][*count]`` items (``*`` as cmd matches every command). Modes:
    ``error`` (default: the command's real failure text, exit 2, nothing done), ``daemon``
    (``<cmd> failed: cannot connect to the multipass socket``, exit 2), ``denied`` (socket access
    denied), ``timeout`` (launch/start/restart: the ``--timeout`` message, exit 5), ``hang`` (sleep
    until killed). With ``*count`` only the next ``count`` matching invocations fail (counted in the
    data folder, across processes).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

REALISTIC = {
    "launch": 40.0,
    "clone": 8.0,
    "start": 12.0,
    "restart": 15.0,
    "stop": 5.0,
    "delete": 2.0,
    "snapshot": 2.0,
    "restore": 2.0,
}


def trace(argv: list[str], start: float, end: float, exit_code: int) -> None:
    path = os.environ.get("MULTIPASS_DOUBLE_TRACE")
    if not path:
        return
    line = json.dumps(
        {"argv": ["multipass", *argv], "start": start, "end": end, "exit_code": exit_code, "pid": os.getpid()}
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def latency_for(command: str) -> float:
    spec = os.environ.get("MULTIPASS_DOUBLE_LATENCY", "")
    table: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        if item == "realistic":
            table.update(REALISTIC)
            continue
        name, _, seconds = item.partition("=")
        try:
            table[name] = float(seconds)
        except ValueError:
            continue
    return table.get(command, 0.0)


def pad_latency(command: str, started: float) -> None:
    """Sleep until the command has taken at least its configured latency."""
    remaining = latency_for(command) - (time.monotonic() - started)
    if remaining > 0:
        time.sleep(remaining)


@dataclass(frozen=True)
class Fault:
    spec: str
    command: str
    mode: str
    count: int | None


def _parse_item(item: str) -> Fault:
    body, count = item, None
    head, star, tail = item.rpartition("*")
    if star and head and tail.isdigit():
        body, count = head, int(tail)
    command, _, mode = body.partition("=")
    return Fault(item, command, mode or "error", count)


def parse_faults(spec: str) -> list[Fault]:
    return [_parse_item(part.strip()) for part in spec.split(",") if part.strip()]


def matching_fault(command: str, consume: Callable[[Fault], bool]) -> Fault | None:
    """The first configured fault for ``command``; counted faults are consumed through ``consume``."""
    for fault in parse_faults(os.environ.get("MULTIPASS_DOUBLE_FAIL", "")):
        if fault.command not in (command, "*"):
            continue
        if fault.count is None or consume(fault):
            return fault
    return None
