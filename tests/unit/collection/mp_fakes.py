"""A scripted stand-in for ``subprocess.Popen`` for the agentvm.multipass collection's unit tests.

``FakeMultipass`` records every argv (and what was fed to stdin) and answers from a responder function, so
tests check the exact command lines the collection builds and how it reacts to Multipass's outputs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible.plugins.loader import init_plugin_loader

COLLECTIONS = Path(__file__).resolve().parents[3] / "collections"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Load the collection the way ansible does (plugin loaders + collection finder).
init_plugin_loader([str(COLLECTIONS)])


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@dataclass
class Reply:
    rc: int = 0
    stdout: bytes | str = b""
    stderr: bytes | str = b""
    hang: bool = False  # communicate() raises TimeoutExpired while a timeout is set

    def out(self) -> bytes:
        return self.stdout.encode() if isinstance(self.stdout, str) else self.stdout

    def err(self) -> bytes:
        return self.stderr.encode() if isinstance(self.stderr, str) else self.stderr


@dataclass
class Call:
    argv: list[str]
    stdin: Any
    stdout: Any
    input: bytes | None = None
    timeout: float | None = None
    killed: bool = False


Responder = Callable[[list[str]], Reply]


@dataclass
class FakeMultipass:
    """Replace ``MultipassCLI.popen`` with :meth:`popen`; answers come from ``responder``."""

    responder: Responder = field(default=lambda argv: Reply())
    calls: list[Call] = field(default_factory=list)

    def popen(self, argv: list[str], stdin: Any = None, stdout: Any = None, stderr: Any = None, env: Any = None):
        call = Call(argv=list(argv), stdin=stdin, stdout=stdout)
        self.calls.append(call)
        return _FakeProcess(self, call)

    @property
    def argvs(self) -> list[list[str]]:
        return [c.argv for c in self.calls]

    def subcommands(self) -> list[str]:
        return [c.argv[1] for c in self.calls]


class _FakeProcess:
    def __init__(self, owner: FakeMultipass, call: Call) -> None:
        self.owner = owner
        self.call = call
        self.returncode: int | None = None

    def communicate(self, input: bytes | None = None, timeout: float | None = None):
        call = self.call
        if self.call.killed:
            self.returncode = -9
            return (b"", b"")
        call.input = input
        call.timeout = timeout
        if hasattr(call.stdin, "read"):
            call.input = call.stdin.read()
        reply = self.owner.responder(call.argv)
        if reply.hang and timeout:
            raise subprocess.TimeoutExpired(call.argv, timeout)
        self.returncode = reply.rc
        out = reply.out()
        if hasattr(call.stdout, "write"):
            call.stdout.write(out)
            out = b""
        return (out, reply.err())

    def kill(self) -> None:
        self.call.killed = True

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode if self.returncode is not None else -9


def route_cli_to(fake: FakeMultipass, monkeypatch: Any, mp_bin: str) -> None:
    """Make every MultipassCLI created from now on run its commands through ``fake`` (and never sleep)."""
    from ansible_collections.agentvm.multipass.plugins.module_utils.multipass import MultipassCLI

    original_init = MultipassCLI.__init__

    def init(self: MultipassCLI, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.popen = fake.popen
        self.sleep = lambda seconds: None

    monkeypatch.setattr(MultipassCLI, "__init__", init)
    monkeypatch.setenv("MULTIPASS_BIN", mp_bin)
