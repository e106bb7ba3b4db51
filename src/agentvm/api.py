"""agentvm's Python API: one run, as ``agentvm run`` does it, for callers in Python (the service's worker, tests).

Everything a caller passes is data: the prompt is bytes, and no value is ever templated or run by a shell.
``run()`` validates first (``UsageError``: nothing was created), then takes the host's VM slot, runs the
pipeline and returns the record that was written to ``<runs>/<run-id>/result.json``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from agentvm.errors import UsageError

__all__ = ["RunOptions", "RunResult", "UsageError", "run"]


@dataclass(frozen=True)
class RunOptions:
    """What a caller asks of one run. ``None`` means: the setting from the environment, else its default."""

    prompt: bytes
    agent: str | None = None
    agent_command: str | None = None
    agent_credentials: str | None = None
    model: str | None = None
    max_turns: int | None = None
    timeout: int | None = None
    workspace: str | None = None
    keep: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    trigger: Mapping[str, str | None] | None = None
    attempt: int | None = None


@dataclass(frozen=True)
class RunResult:
    record: dict[str, Any]
    exit_code: int
    run_dir: Path


def run(
    options: RunOptions,
    env: Mapping[str, str] | None = None,
    *,
    cancel: threading.Event | None = None,
    on_phase: Callable[[str], None] | None = None,
    out: TextIO | None = None,
) -> RunResult:
    """Run one prompt to the end. Raises ``UsageError`` (nothing created) and ``QueueTimeout`` (no VM slot).

    ``env`` replaces ``os.environ`` as the source of settings (a worker per simulated host passes its own);
    setting ``cancel`` interrupts the run (its VM is deleted, the record says ``interrupted``); ``on_phase``
    is called with each phase name as the run enters it (for heartbeats).
    """
    import os

    from agentvm import ops
    from agentvm.cli import load_vault
    from agentvm.request import build_request
    from agentvm.runner import Run

    source = dict(os.environ if env is None else env)
    for key in ("PROMPT", "PROMPT_FILE"):
        source.pop(key, None)
    for key, value in (
        ("AGENT", options.agent),
        ("AGENT_COMMAND", options.agent_command),
        ("AGENT_CREDENTIALS", options.agent_credentials),
        ("MODEL", options.model),
        ("MAX_TURNS", None if options.max_turns is None else str(options.max_turns)),
        ("TIMEOUT", None if options.timeout is None else str(options.timeout)),
        ("WORKSPACE", options.workspace),
    ):
        if value is not None:
            source[key] = value
    source["KEEP"] = "1" if options.keep else ""
    stream = out or sys.stderr
    request = build_request(source, stdin=options.prompt, vault=load_vault(source))
    limits = ops.limits(source)
    with ops.host_slot(request, limits, out=stream):
        record, code = Run(request, out=stream, cancel=cancel, on_phase=on_phase).execute()
    ops.alert(record, request.run_dir, out=stream)
    return RunResult(record=record, exit_code=code, run_dir=request.run_dir)
