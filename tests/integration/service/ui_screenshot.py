"""Screenshot of the Temporal UI's workflow list with agentvm's columns, for docs/service.md.

    python tests/integration/service/ui_screenshot.py http://127.0.0.1:8233 docs/img/service-ui.png

Drives headless Chromium (Debian's ``chromium`` package) over its DevTools protocol on loopback: sets the UI's
column choice (its ``namespace-workflow-table-columns`` local-storage entry) to show AgentvmStatus, AgentvmHost and
AgentvmAgent, reloads, and captures the page. Not a test; a tool for the docs.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

COLUMNS = [
    "Status",
    "Workflow ID",
    "AgentvmStatus",
    "AgentvmHost",
    "AgentvmAgent",
    "AgentvmLabels",
    "Start",
    "End",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def capture(ui: str, out: Path, width: int = 1600, height: int = 720) -> None:
    port = _port()
    profile = tempfile.mkdtemp(prefix="agentvm-chromium-")
    browser = subprocess.Popen(
        [
            shutil.which("chromium") or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-proxy-server",
            "--hide-scrollbars",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ids = itertools.count(1)
    try:
        async with aiohttp.ClientSession(trust_env=False) as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json") as response:
                        pages = [p for p in await response.json() if p["type"] == "page"]
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:

                async def call(method: str, **params: object) -> dict:
                    number = next(ids)
                    await ws.send_json({"id": number, "method": method, "params": params})
                    async for message in ws:
                        data = json.loads(message.data)
                        if data.get("id") == number:
                            return data.get("result") or {}
                    raise RuntimeError("the browser closed the connection")

                page = f"{ui}/namespaces/default/workflows"
                await call("Page.navigate", url=page)
                await asyncio.sleep(3)
                columns = json.dumps({"default": [{"label": c} for c in COLUMNS]})
                await call(
                    "Runtime.evaluate",
                    expression=f"localStorage.setItem('namespace-workflow-table-columns', {json.dumps(columns)})",
                )
                await call(
                    "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
                )
                await call("Page.navigate", url=page)
                loaded = (
                    "/[1-9][0-9]* Workflows/.test(document.body.innerText) && !document.querySelector('.animate-pulse')"
                )
                for _ in range(120):
                    result = await call("Runtime.evaluate", expression=loaded, returnByValue=True)
                    if (result.get("result") or {}).get("value"):
                        break
                    await asyncio.sleep(0.5)
                await asyncio.sleep(1)
                shot = await call("Page.captureScreenshot", format="png")
                out.write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(capture(sys.argv[1].rstrip("/"), Path(sys.argv[2])))
