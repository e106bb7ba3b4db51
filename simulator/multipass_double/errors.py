"""The backend's exceptions (re-exported by ``backend.py``, where the contract names them)."""

from __future__ import annotations


class BackendError(Exception):
    """Something failed below the CLI (mount, nspawn, network)."""


class BackendTimeout(BackendError):
    """A wait (SSH up, cloud-init done) did not finish in time."""
