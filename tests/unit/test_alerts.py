"""Alert delivery to a real HTTP server on loopback and to a command hook."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from agentvm.host import alerts

RECORD = {
    "run_id": "20260101t000000-abcdef",
    "status": "agent_failed",
    "exit_code": 1,
    "error": {"phase": "agent", "message": "the agent exited with code 7", "hint": "see stderr.log"},
    "agent": {"name": "custom", "version": None, "model": None, "exit_code": 7},
    "timings": {"agent": 1.0, "total": 9.5},
    "instance": {"name": "agentvm-run-20260101t000000-abcdef"},
    "retries": [],
}


@pytest.fixture
def server():
    received: list[dict] = []
    codes: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            code = codes.pop(0) if codes else 200
            if code == 200:
                received.append(json.loads(body))
            self.send_response(code)
            self.end_headers()

        def log_message(self, *_args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", received, codes
    httpd.shutdown()


def test_failed_run_is_posted_once(server):
    url, received, _ = server
    assert alerts.send(RECORD, Path("/runs/x"), url=url) == []
    [alert] = received
    assert alert["run_id"] == RECORD["run_id"] and alert["status"] == "agent_failed"
    assert alert["error"]["message"] == "the agent exited with code 7"
    assert alert["agent"]["name"] == "custom" and alert["durations"]["total"] == 9.5
    assert alert["folder"] == "/runs/x"


def test_succeeded_run_sends_nothing(server):
    url, received, _ = server
    assert alerts.send({**RECORD, "status": "succeeded"}, Path("/runs/x"), url=url) == []
    assert received == []


def test_server_errors_are_retried_with_bounded_attempts(server):
    url, received, codes = server
    codes.extend([500, 503])
    sleeps: list[float] = []
    assert alerts.send(RECORD, Path("/r"), url=url, sleep=sleeps.append) == []
    assert len(received) == 1 and sleeps == [1.0, 2.0]
    codes.extend([500, 500, 500])
    [problem] = alerts.send(RECORD, Path("/r"), url=url, sleep=sleeps.append)
    assert "HTTP 500" in problem and "after 3 attempts" in problem


def test_client_errors_are_not_retried(server):
    url, _, codes = server
    codes.append(404)
    sleeps: list[float] = []
    [problem] = alerts.send(RECORD, Path("/r"), url=url, sleep=sleeps.append)
    assert "HTTP 404" in problem and sleeps == []


def test_unreachable_webhook_is_reported_not_raised():
    [problem] = alerts.send(RECORD, Path("/r"), url="http://127.0.0.1:9/x", sleep=lambda _s: None)
    assert "not delivered" in problem


def test_command_hook_gets_the_json_on_stdin(tmp_path):
    out = tmp_path / "alert.json"
    command = f"{sys.executable} -c 'import sys,shutil; shutil.copyfileobj(sys.stdin, open(sys.argv[1], \"w\"))' {out}"
    assert alerts.send(RECORD, Path("/r"), command=command) == []
    assert json.loads(out.read_text())["status"] == "agent_failed"
