#!/usr/bin/env python3
"""The credential proxy's added latency per request on loopback: the same requests sent directly to a local
upstream and through the proxy (token in, key out), sequentially on one keep-alive connection each.
Figures are printed (median and p95 per case, and the difference), never asserted.

    .venv/bin/python scripts/bench_proxy.py [-n REQUESTS] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from agentvm.host.isolation import parse_egress
from agentvm.host.proxy import Credential, CredentialProxy, Upstream

KEY = "sk-bench-key"
SMALL = json.dumps({"id": "msg_1", "type": "message", "content": [{"type": "text", "text": "x" * 200}]}).encode()
BIG = b"y" * (1024 * 1024)
SSE_EVENTS = 20


class LocalUpstream:
    """A small aiohttp upstream on loopback in its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_post("/v1/messages", self._small)
        app.router.add_get("/big", self._big)
        app.router.add_get("/sse", self._sse)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return int(self.runner.addresses[-1][1])

    async def _small(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=SMALL, content_type="application/json")

    async def _big(self, _request: web.Request) -> web.Response:
        return web.Response(body=BIG)

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(SSE_EVENTS):
            await response.write(f"data: {i}\n\n".encode())
        await response.write_eof()
        return response

    def close(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def timed(port: int, headers: dict[str, str], method: str, path: str, body: bytes | None, n: int) -> list[float]:
    """Milliseconds per request, ``n`` sequential requests on one keep-alive connection (after 10 warm-ups)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    samples = []
    try:
        for i in range(n + 10):
            start = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"{method} {path} answered {response.status}")
            if i >= 10:
                samples.append((time.perf_counter() - start) * 1000)
    finally:
        conn.close()
    return samples


def _headers(credential: str) -> dict[str, str]:
    return {"x-api-key": credential, "content-type": "application/json"}


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


def measure(n: int) -> dict[str, dict[str, float]]:
    upstream = LocalUpstream()
    proxy = CredentialProxy.start(
        "127.0.0.1",
        [Upstream("bench", f"http://127.0.0.1:{upstream.port}", Credential.anthropic(KEY))],
        egress=parse_egress("open"),
    )
    cases: list[tuple[str, str, str, bytes | None, int]] = [
        ("small POST (JSON, 0.3 KiB answer)", "POST", "/v1/messages", b'{"model":"m","messages":[]}', n),
        (f"SSE stream ({SSE_EVENTS} events)", "GET", "/sse", None, n),
        ("1 MiB GET", "GET", "/big", None, max(5, n // 10)),
    ]
    figures: dict[str, dict[str, float]] = {}
    try:
        for label, method, path, body, count in cases:
            direct = timed(upstream.port, _headers(KEY), method, path, body, count)
            proxied = timed(proxy.api_ports["bench"], _headers(proxy.token), method, path, body, count)
            figures[label] = {
                "requests": count,
                "direct_median_ms": statistics.median(direct),
                "direct_p95_ms": p95(direct),
                "proxy_median_ms": statistics.median(proxied),
                "proxy_p95_ms": p95(proxied),
                "added_median_ms": statistics.median(proxied) - statistics.median(direct),
                "added_p95_ms": p95(proxied) - p95(direct),
            }
    finally:
        proxy.stop()
        upstream.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=500, help="requests per case (default 500)")
    parser.add_argument("--json", type=Path, help="also write the figures there")
    args = parser.parse_args()
    figures = measure(max(2, args.n))
    print(
        f"credential proxy on loopback (Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        "sequential requests, one keep-alive connection)"
    )
    for label, f in figures.items():
        print(f"{label}: {int(f['requests'])} requests")
        for kind in ("direct", "proxy", "added"):
            print(f"  {kind:<7} median {f[f'{kind}_median_ms']:.3f} ms   p95 {f[f'{kind}_p95_ms']:.3f} ms")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
