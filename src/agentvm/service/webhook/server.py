"""Serving the receiver: uvicorn on a socket bound here (127.0.0.1:8788 unless told otherwise), runs submitted to
the service's Temporal. ``agentvm webhook`` runs it alone; ``agentvm service`` runs it beside the worker when
``AGENTVM_WEBHOOK_ROUTES`` is set. Both stop it on SIGINT/SIGTERM/SIGHUP (their own handlers, not uvicorn's).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from agentvm.errors import UsageError
from agentvm.service import config
from agentvm.service.spec import RunSpec
from agentvm.service.webhook import app, routes

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8788
ROUTES_VAR = "AGENTVM_WEBHOOK_ROUTES"
LISTEN_VAR = "AGENTVM_WEBHOOK_LISTEN"


def _say(text: str) -> None:
    print(f"agentvm: {text}", file=sys.stderr, flush=True)


def parse_listen(text: str | None) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST``, ``:PORT`` or ``[v6]:PORT`` → (host, port); defaults 127.0.0.1 and 8788."""
    raw = (text or "").strip()
    if not raw:
        return DEFAULT_HOST, DEFAULT_PORT
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif raw.count(":") == 1:
        host, _, port = raw.partition(":")
    else:
        host, port = raw, ""
    host = host or DEFAULT_HOST
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise UsageError(f"--listen ({LISTEN_VAR}) {text!r}: the port must be 1-65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise UsageError(f"--listen ({LISTEN_VAR}) {text!r}: give an IP address (e.g. 127.0.0.1:8788)") from None
    return host, int(port) if port else DEFAULT_PORT


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"the webhook receiver cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class TemporalSubmit:
    """Submits runs to the service; connects at the first delivery and again after a failure."""

    def __init__(self, settings: config.Settings, env: Mapping[str, str]) -> None:
        self.settings, self.env = settings, env
        self.client: Any = None

    async def __call__(self, spec: RunSpec, workflow_id: str) -> bool:
        from temporalio.service import RPCError

        from agentvm.service import client as svc

        try:
            if self.client is None:
                self.client = await config.connect(self.settings, self.env)
            return (await svc.submit(self.client, self.settings, spec, workflow_id)).created
        except config.Unavailable as exc:
            raise app.Unreachable(str(exc)) from None
        except (RPCError, RuntimeError, OSError) as exc:
            self.client = None
            raise app.Unreachable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


class _Server:
    """uvicorn's server without its signal handlers (the caller's handlers stop it through ``stop``)."""

    def __init__(self, application: Any, sock: socket.socket) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self.sock = sock
        cfg = uvicorn.Config(
            application,
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            date_header=False,
            proxy_headers=False,
            lifespan="off",
            http="h11",
            ws="none",
            limit_concurrency=64,
            timeout_keep_alive=5,
            h11_max_incomplete_event_size=16 * 1024,
            timeout_graceful_shutdown=10,
        )
        self.server = Quiet(cfg)

    async def serve(self, stop: asyncio.Event) -> None:
        task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        self.server.should_exit = True
        stopper.cancel()
        try:
            await task
        finally:
            self.sock.close()


def load_routes(path: str | None, env: Mapping[str, str]) -> dict[str, routes.Route]:
    source = path or env.get(ROUTES_VAR)
    if not source:
        raise UsageError(f"give the routes file: agentvm webhook --routes FILE (or {ROUTES_VAR}=FILE)")
    return routes.load(Path(source), env)


def open_socket(env: Mapping[str, str], listen: str | None) -> socket.socket:
    """The receiver's listening socket (``--listen``, else ``AGENTVM_WEBHOOK_LISTEN``, else 127.0.0.1:8788)."""
    return bind(*parse_listen(listen if listen is not None else env.get(LISTEN_VAR)))


async def serve(
    table: Mapping[str, routes.Route],
    settings: config.Settings,
    env: Mapping[str, str],
    sock: socket.socket,
    stop: asyncio.Event,
) -> None:
    """Serve ``table`` on ``sock`` until ``stop`` is set."""
    receiver = app.Receiver(routes=table, submit=TemporalSubmit(settings, env), env=env, log=_say)
    server = _Server(app.application(receiver), sock)
    host, port = sock.getsockname()[:2]
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    paths = ", ".join(f"{r.name} {r.path}{'' if r.enabled else ' (disabled)'}" for r in table.values())
    _say(f"webhook receiver on http://{where} (routes: {paths})")
    if not ipaddress.ip_address(host).is_loopback:
        _say(f"the webhook receiver listens on {host}, beyond this machine: put a TLS proxy in front of it")
    await server.serve(stop)
    _say("webhook receiver stopped")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)


async def main(routes_file: str | None, listen: str | None, env: Mapping[str, str]) -> int:
    """``agentvm webhook``: the receiver alone (the service and its worker run elsewhere)."""
    table = load_routes(routes_file, env)
    settings = config.load(env, need_host=False)
    sock = open_socket(env, listen)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    await serve(table, settings, env, sock, stop)
    return 0
