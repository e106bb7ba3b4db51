"""Fixtures of the service tests (helpers in svc_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from svc_helpers import Proc


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Children started by a test; all of them are stopped (and killed if need be) afterwards."""
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()
    assert all(p.proc.poll() is not None for p in started)
