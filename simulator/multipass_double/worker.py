"""Run a long operation the way the Multipass daemon does: apart from the client.

The operation runs in a detached child (its own session, stdio to the data folder's daemon.log) and
reports its result through a pipe. When the client's ``--timeout`` expires first, the client exits 5
and the operation carries on, as Multipass documents ("initialisation continues in the background").
A Ctrl-C to the client likewise leaves the operation running.
"""

from __future__ import annotations

import json
import os
import select
import time
import traceback
from collections.abc import Callable
from pathlib import Path

Result = tuple[int, str, str]  # exit code, stdout, stderr


def _child(work: Callable[[], Result], write_fd: int, log_path: Path) -> None:
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        try:
            result = work()
        except BaseException as exc:  # report anything to the client rather than dying silently
            traceback.print_exc()
            result = (2, "", f"internal error in the Multipass double: {exc}\n")
        payload = json.dumps(result).encode()
        view = memoryview(payload)
        while view:
            written = os.write(write_fd, view)
            view = view[written:]
    finally:
        os._exit(0)


def run_detached(
    work: Callable[[], Result], client_timeout: float | None, timeout_message: str, log_path: Path
) -> Result:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(work, write_fd, log_path)
    os.close(write_fd)
    deadline = None if client_timeout is None else time.monotonic() + client_timeout
    chunks: list[bytes] = []
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([read_fd], [], [], wait)
        if not ready:
            os.close(read_fd)
            return (5, "", timeout_message + "\n")
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    if not chunks:
        return (2, "", "internal error in the Multipass double: the operation died without a result\n")
    code, out, err = json.loads(b"".join(chunks))
    return int(code), str(out), str(err)
