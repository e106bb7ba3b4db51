"""Alerts for runs that did not succeed: a JSON POST to ``ALERT_WEBHOOK_URL`` and/or ``ALERT_COMMAND``
(the same JSON on its stdin), each with bounded retries. Delivery problems are reported, never raised."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from agentvm.settings import Settings

DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF = 1.0
HTTP_TIMEOUT = 10
COMMAND_TIMEOUT = 60


def payload(record: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    return {
        "event": "agentvm.run.not_succeeded",
        "run_id": record["run_id"],
        "status": record["status"],
        "exit_code": record["exit_code"],
        "error": record.get("error"),
        "agent": record.get("agent"),
        "durations": record.get("timings"),
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "instance": (record.get("instance") or {}).get("name"),
        "retries": len(record.get("retries") or []),
        "folder": str(run_dir),
        "host": socket.gethostname(),
    }


class Permanent(Exception):
    """A failure that retrying will not fix (e.g. HTTP 4xx)."""


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "agentvm"}
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            raise Permanent(f"HTTP {exc.code} {exc.reason}") from None
        raise OSError(f"HTTP {exc.code} {exc.reason}") from None


def _command(argv: list[str], body: bytes) -> None:
    proc = subprocess.run(argv, input=body, capture_output=True, timeout=COMMAND_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise OSError(f"exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[:200]}")


def _deliver(send: Callable[[], None], attempts: int, backoff: float, sleep: Callable[[float], None]) -> str | None:
    """None when delivered, else the last error."""
    error = "not attempted"
    for attempt in range(attempts):
        try:
            send()
            return None
        except Permanent as exc:
            return str(exc)
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            error = str(exc) or type(exc).__name__
        if attempt + 1 < attempts:
            sleep(backoff * 2**attempt)
    return f"{error} (after {attempts} attempts)"


def send(
    record: Mapping[str, Any],
    run_dir: Path,
    url: str = "",
    command: str = "",
    attempts: int = DEFAULT_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Alert about a run that did not succeed; return one line per failed delivery (empty: all fine)."""
    if record.get("status") == "succeeded" or (not url and not command):
        return []
    body = json.dumps(payload(record, run_dir)).encode()
    problems = []
    if url:
        error = _deliver(lambda: _post(url, body), attempts, DEFAULT_BACKOFF, sleep)
        if error:
            problems.append(f"alert to ALERT_WEBHOOK_URL not delivered: {error}")
    if command:
        error = _deliver(lambda: _command(shlex.split(command), body), attempts, DEFAULT_BACKOFF, sleep)
        if error:
            problems.append(f"ALERT_COMMAND failed: {error}")
    return problems


def alert(record: Mapping[str, Any], run_dir: Path, settings: Settings, out: TextIO) -> None:
    """Send the alerts of a finished run (settings decide where); print one warning per failed delivery."""
    for problem in send(record, run_dir, settings.alert_webhook_url, settings.alert_command, settings.alert_attempts):
        print(f"agentvm: warning: {problem}", file=out, flush=True)
