"""Fixtures for the agentvm.multipass collection's unit tests (helpers live in ``mp_fakes``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mp_fakes import FakeMultipass


@pytest.fixture
def fake_multipass() -> FakeMultipass:
    return FakeMultipass()


@pytest.fixture
def mp_bin(tmp_path: Path) -> str:
    """An executable file to stand for ``multipass`` (never run: Popen is faked)."""
    path = tmp_path / "bin" / "multipass"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 99\n")
    path.chmod(0o755)
    return str(path)
