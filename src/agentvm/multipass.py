"""The one way from agentvm's Python code to Multipass: a typed facade over the collection's ``MultipassCLI``.

The collection's ``module_utils/multipass.py`` (standard library only) builds every argv, starts every
``multipass`` process, and turns failures into typed errors (``InstanceNotFoundError``, …). This module loads
that file and adds what agentvm needs on top (the golden's manifest, deletion that treats "already gone" as
done, a streaming ``exec``). Nothing else in ``src/agentvm`` starts the Multipass executable.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from agentvm.settings import REPO

MODULE_UTILS = REPO / "collections" / "ansible_collections" / "agentvm" / "multipass" / "plugins" / "module_utils"


def _load() -> ModuleType:
    name = "agentvm._multipass_cli"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, MODULE_UTILS / "multipass.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


mp = _load()
MultipassError: type[Exception] = mp.MultipassError
InstanceNotFoundError: type[Exception] = mp.InstanceNotFoundError
MultipassNotInstalledError: type[Exception] = mp.MultipassNotInstalledError
MultipassTimeoutError: type[Exception] = mp.MultipassTimeoutError


@dataclass(frozen=True)
class Golden:
    name: str
    state: str | None  # None: no such instance
    manifest: dict[str, Any] | None  # None: no sealed snapshot with a manifest

    @property
    def manifest_id(self) -> str | None:
        value = (self.manifest or {}).get("build_id") or (self.manifest or {}).get("inputs_sha256")
        return str(value) if value else None


def _manifest(comment: str) -> dict[str, Any] | None:
    try:
        manifest = json.loads(comment)
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) and manifest else None


@dataclass(frozen=True)
class DeleteResult:
    ok: bool
    message: str = ""


class Multipass:
    """agentvm's client of Multipass (one per process or run; cheap to create)."""

    def __init__(self, binary: str | None, environ: Mapping[str, str], timeout: float = 120.0) -> None:
        self.environ = dict(environ)
        self.cli = mp.MultipassCLI(binary=binary, timeout=timeout, environ=self.environ)
        # Deletes run in a session of their own: a Ctrl-C at the terminal (sent to the whole foreground group)
        # must not kill the very client that is tearing the VM down.
        shielded = functools.partial(subprocess.Popen, start_new_session=True)
        self.shielded = mp.MultipassCLI(binary=binary, timeout=timeout, environ=self.environ, popen=shielded)

    @property
    def binary(self) -> str:
        """The resolved executable (raises ``MultipassNotInstalledError`` when missing)."""
        return str(self.cli.bin)

    def version(self) -> dict[str, str | None]:
        """``{"multipass": client version, "multipassd": daemon version or None}``."""
        return self.cli.version()

    def state(self, name: str) -> str | None:
        """The instance's state without entering the guest; ``None`` when it does not exist."""
        return self.cli.state(name)

    def ipv4(self, name: str) -> str | None:
        """The instance's first IPv4 address (None when it has none or does not exist). From ``list``: ``info``
        gives addresses only with runtime information, which costs an SSH session into the guest."""
        entry = next((e for e in self.cli.list_instances() if e["name"] == name), {})
        addresses = mp.valid_ipv4(entry.get("ipv4") or [])
        return addresses[0] if addresses else None

    def instances(self) -> dict[str, str]:
        """name -> state of every instance, deleted ones included."""
        return {entry["name"]: entry["state"] for entry in self.cli.list_instances()}

    def golden(self, golden: str, snapshot: str = "sealed") -> Golden:
        """The golden's state and the manifest its ``sealed`` snapshot carries, in one ``info`` call.

        A golden is complete only when it is Stopped and has the snapshot (docs/golden.md)."""
        argv = [
            self.cli.bin,
            "info",
            "--no-runtime-information",
            "--format",
            "json",
            "--",
            golden,
            f"{golden}.{snapshot}",
        ]
        try:
            entry = mp.parse_info(self.cli.run(argv).stdout).get(golden) or {}
        except mp.InstanceNotFoundError:
            return Golden(golden, None, None)
        except mp.MultipassError as exc:
            if "does not exist" not in exc.message and "No such snapshot" not in exc.message:
                raise
            return Golden(golden, self.state(golden), None)
        comment = ((entry.get("snapshots") or {}).get(snapshot) or {}).get("comment") or ""
        return Golden(golden, str(entry.get("state") or "Unknown"), _manifest(comment))

    def delete(self, name: str, *, attempts: int = 3, timeout: float = 300, backoff: float = 2.0) -> DeleteResult:
        """Delete and purge ``name``; an instance that does not exist counts as deleted. Retries failures and
        timeouts ``attempts`` times; the result says what failed last."""
        message = ""
        for attempt in range(attempts):
            try:
                self.shielded.delete(name, purge=True, timeout=timeout, missing_ok=True)
                return DeleteResult(ok=True)
            except mp.MultipassError as exc:
                message = exc.message.strip().splitlines()[0] if exc.message.strip() else type(exc).__name__
            if attempt + 1 < attempts:
                time.sleep(backoff * (attempt + 1))
        return DeleteResult(ok=False, message=message)

    def stream(self, name: str, command: Sequence[str]) -> subprocess.Popen[bytes]:
        """``multipass exec NAME -- COMMAND`` with its stdout as a pipe, for following a log while it grows."""
        return self.cli.popen_exec(name, list(command))


def delete_command(name: str) -> str:
    """The command a person runs to delete an instance by hand."""
    return f"multipass delete --purge {name}"
