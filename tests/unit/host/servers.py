"""Test servers for the proxy tests: a recording aiohttp upstream (JSON, redirects, a gated SSE stream, a big
body) and a plain TCP/HTTP origin, each on its own event loop thread, on an address the test chooses."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from dataclasses import dataclass, field

from aiohttp import web


class LoopThread:
    """An asyncio loop in a daemon thread; ``call(coro)`` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class SseGate:
    """The SSE route sends event 0, then waits for ``release[i]`` before sending event i (i >= 1)."""

    count: int = 4
    release: list[threading.Event] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.release = [threading.Event() for _ in range(self.count)]


class RecordingUpstream:
    def __init__(self, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.seen: list[Seen] = []
        self.sse = SseGate()
        self.sse_delay: float | None = None
        self.loop = LoopThread()
        self.runner: web.AppRunner | None = None
        self.port = self.loop.call(self._start())

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def _start(self) -> int:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/redirect", self._redirect)
        app.router.add_route("GET", "/sse", self._sse)
        app.router.add_get("/big", self._big)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0, ssl_context=self.ssl_context)
        await site.start()
        return int(self.runner.addresses[-1][1])

    async def _record(self, request: web.Request) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        self.seen.append(Seen(request.method, request.raw_path, headers, await request.read()))

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        body = json.dumps({"ok": True, "path": request.raw_path}).encode()
        headers = {
            "X-Upstream": "yes",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "secret-hop",
            "Keep-Alive": "timeout=5",
            "Content-Type": "application/json",
        }
        return web.Response(body=body, headers=headers)

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.Response(status=302, headers={"Location": "http://127.0.0.1:9/elsewhere"})

    async def _big(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.Response(body=b"x" * int(request.query.get("n", "1000")))

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        for i in range(self.sse.count):
            if i and self.sse_delay is not None:
                await asyncio.sleep(self.sse_delay)
            elif i:
                released = await loop.run_in_executor(None, self.sse.release[i].wait, 20)
                if not released:
                    break
            self.sse.sent_at.append(time.monotonic())
            try:
                await response.write(f"event: n\ndata: {json.dumps({'i': i})}\n\n".encode())
            except ConnectionError:  # the proxy cut the stream (stop() during an answer)
                return response
        await response.write_eof()
        return response

    def close(self) -> None:
        for gate in self.sse.release:  # a stream still waiting for its next event ends now
            gate.set()
        if self.runner is not None:
            self.loop.call(self.runner.cleanup())
        self.loop.close()


class StreamServer:
    """A raw asyncio TCP server on its own loop thread; subclasses answer in ``_serve``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.loop = LoopThread()
        self.server: asyncio.Server | None = None
        self.port = self.loop.call(self._start())

    async def _start(self) -> int:
        self.server = await asyncio.start_server(self._serve, self.host, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.loop.close()


class TcpOrigin(StreamServer):
    """A plain HTTP/1.1 origin on raw asyncio streams: answers every request with its head echoed back as JSON
    (one request per connection), so tests see exactly what the proxy sent."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        super().__init__(host)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            self.bodies.append(await reader.readexactly(length) if length else b"")
            body = json.dumps({"head": head.decode("latin-1")}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class EchoServer(StreamServer):
    """A TCP echo server (what a CONNECT tunnel leads to in tests)."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
