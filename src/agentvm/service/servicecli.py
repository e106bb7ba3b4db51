"""`agentvm service` and `agentvm worker`: the embedded dev server and this host's worker, foreground or detached."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from agentvm.errors import Exit, UsageError
from agentvm.host import slots
from agentvm.service import config

UNAVAILABLE_EXIT = 3
NOT_FOUND_EXIT = 1
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 180.0
CANCEL_WAIT = 120.0


def _say(text: str) -> None:
    print(f"agentvm: {text}", file=sys.stderr, flush=True)


def _logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A failed attempt that will be retried is reported by the worker's own lines; the SDK's traceback is noise.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def handler(signum: int) -> None:
        if not stop.is_set():
            _say(f"{signal.Signals(signum).name}: stopping (interrupting running runs; their VMs are deleted)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, handler, sig)


async def _worker(env: Mapping[str, str]) -> int:
    from agentvm.service import worker

    settings = config.load(env)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    await worker.serve(settings, stop)
    return 0


def _lock_path(settings: config.Settings) -> Path:
    return settings.service_dir / "service.lock"


def _read_lock(settings: config.Settings) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(_lock_path(settings).read_text() or "{}")
    return {}


def _write_lock(fh: IO[str], data: dict[str, Any]) -> None:
    fh.seek(0)
    fh.truncate(0)
    fh.write(json.dumps(data))
    fh.flush()


async def _service(env: Mapping[str, str]) -> int:
    from agentvm.service import devserver, worker

    settings = config.load(env)
    hooks = _webhook_setup(env)  # the routes are checked and the port bound before anything starts
    settings.service_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = slots.hold(_lock_path(settings))
    if lock is None:
        pid = _read_lock(settings).get("pid")
        if hooks is not None:
            hooks[1].close()
        raise UsageError(f"the service already runs (pid {pid}): stop it with `make service-stop`")
    info: dict[str, Any] = {"pid": os.getpid(), "address": settings.address, "host": settings.host, "ready": False}
    _write_lock(lock, info)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    server = None
    watcher = None
    receiver = None
    try:
        if settings.embedded:
            log = open(settings.service_dir / "temporal.log", "ab")  # noqa: SIM115 - open for the server's life
            server = devserver.DevServer(settings, log)
            server.start()
            await devserver.wait_ready(server)
            info["server_pid"] = server.proc.pid if server.proc is not None else None
            _say(
                f"Temporal dev server on {settings.address} (UI {settings.ui_url or 'off'}; state"
                f" {server.db}); not for production: see docs/service.md"
            )
            watcher = asyncio.create_task(_watch_server(server, stop))
        else:
            _say(f"using the Temporal cluster at {settings.address} (namespace {settings.namespace}); no local server")

        def ready() -> None:
            _write_lock(lock, {**info, "ready": True, "ui": settings.ui_url if settings.embedded else None})

        if hooks is not None:
            receiver = asyncio.create_task(_webhook_serve(hooks, settings, env, stop))
        await worker.serve(settings, stop, on_ready=ready)
    finally:
        if receiver is not None:
            stop.set()
            await asyncio.gather(receiver, return_exceptions=True)
        elif hooks is not None:
            hooks[1].close()
        if watcher is not None:
            watcher.cancel()
        if server is not None:
            server.stop()
            _say("Temporal dev server stopped")
        _write_lock(lock, {})
        lock.close()
    return 0


def _webhook_setup(env: Mapping[str, str]) -> tuple[Any, Any] | None:
    """With AGENTVM_WEBHOOK_ROUTES: the webhook receiver's routes and its bound socket (docs/triggers.md)."""
    from agentvm.service.webhook import server as webhook

    if not env.get(webhook.ROUTES_VAR):
        return None
    table = webhook.load_routes(None, env)
    return table, webhook.open_socket(env, None)


async def _webhook_serve(hooks: tuple[Any, Any], settings: config.Settings, env: Mapping[str, str], stop: Any) -> None:
    from agentvm.service.webhook import server as webhook

    try:
        await webhook.serve(hooks[0], settings, env, hooks[1], stop)
    except Exception as exc:
        _say(f"the webhook receiver failed ({type(exc).__name__}: {exc}): stopping the service")
        stop.set()


async def _watch_server(server: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        code = server.exited()
        if code is not None:
            _say(f"the Temporal dev server exited (code {code}): stopping the worker")
            stop.set()
            return
        await asyncio.sleep(1)


def _detach(env: Mapping[str, str]) -> int:

    settings = config.load(env)
    settings.service_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if slots.is_locked(_lock_path(settings)):
        _say(f"the service already runs (pid {_read_lock(settings).get('pid')})")
        return Exit.USAGE
    log_path = settings.service_dir / "service.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentvm.service.cli", "service"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={k: v for k, v in env.items() if k != "DETACH"},  # the child serves in the foreground
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        data = _read_lock(settings)
        if data.get("pid") == proc.pid and data.get("ready"):
            where = f"UI {data['ui']}" if data.get("ui") else f"Temporal {data.get('address')}"
            _say(
                f"service running in the background (pid {proc.pid}; {where}; log {log_path}); stop: make service-stop"
            )
            return 0
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            _say(f"the service exited with code {proc.returncode}:\n" + "\n".join(tail))
            return proc.returncode or 1
        time.sleep(0.2)
    _say(f"the service did not become ready in {READY_TIMEOUT:.0f} s; see {log_path}")
    return 1


def _stop(env: Mapping[str, str]) -> int:

    settings = config.load(env, need_host=False)
    path = _lock_path(settings)
    pid = _read_lock(settings).get("pid")
    if not slots.is_locked(path) or not isinstance(pid, int):
        _say("no service is running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while slots.is_locked(path) and time.monotonic() < deadline:
        time.sleep(0.2)
    if slots.is_locked(path):
        _say(f"the service (pid {pid}) is still stopping after {STOP_TIMEOUT:.0f} s; see its log")
        return 1
    _say(f"service stopped (pid {pid})")
    return 0


# --- entry ------------------------------------------------------------------------------------------------------
