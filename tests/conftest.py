"""Names shared by the tests. The fixtures of the Multipass double live in ``simulator/pytest_plugin.py``.

Ansible's collection loader is installed here, once, before any test module is imported: a test that imports
``ansible_collections.agentvm...`` as a plain package (through pytest's ``pythonpath``) before the loader is
installed would leave the collection half-known to it, and every later import through it would fail.
"""

from __future__ import annotations

from ansible.plugins.loader import init_plugin_loader

from simulator import DOUBLE_ADMIN, DOUBLE_BIN, REPO

COLLECTIONS = REPO / "collections"
init_plugin_loader([str(COLLECTIONS)])

__all__ = ["COLLECTIONS", "DOUBLE_ADMIN", "DOUBLE_BIN", "REPO"]
