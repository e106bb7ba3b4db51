"""Fixtures of the run-pipeline tests: ``mock``, the model-API mock listening where the double's instances
reach the host (the data folder's bridge address)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from simulator.mocks.model_api import make_server
from tests.conftest import DOUBLE_ADMIN


class Mock:
    def __init__(self, host: str, record: Path) -> None:
        self.host = host
        self.record = record
        self.server = None

    def start(self, script: dict) -> str:
        self.stop()
        self.record.mkdir(parents=True, exist_ok=True)
        (self.record / "requests.jsonl").unlink(missing_ok=True)
        self.server = make_server(self.host, 0, self.record, script)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://{self.host}:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def requests(self) -> list[dict]:
        path = self.record / "requests.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def mock(golden, tmp_path_factory):
    host = subprocess.run(
        [sys.executable, str(DOUBLE_ADMIN), "host-ip"], env=golden.env, capture_output=True, text=True, check=True
    ).stdout.strip()
    server = Mock(host, tmp_path_factory.mktemp("mock"))
    yield server
    server.stop()
