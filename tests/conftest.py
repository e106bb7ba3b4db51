"""Names shared by the tests. The fixtures of the Multipass double live in ``simulator/pytest_plugin.py``."""

from __future__ import annotations

from simulator import DOUBLE_ADMIN, DOUBLE_BIN, REPO

COLLECTIONS = REPO / "collections"

__all__ = ["COLLECTIONS", "DOUBLE_ADMIN", "DOUBLE_BIN", "REPO"]
