"""agentvm's Python API: one run, as ``agentvm run`` does it, for callers in Python (the service's worker, tests).

Everything a caller passes is data: the prompt is bytes, and no value is ever templated or run by a shell.
``run()`` validates first (``UsageError``: nothing was created), then takes the host's VM slot, runs the
pipeline and returns the record that was written to ``<runs>/<run-id>/result.json``.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

from agentvm.errors import QueueTimeout, UsageError
from agentvm.host.alerts import alert
from agentvm.host.hostslot import host_slot
from agentvm.host.pool import Pool
from agentvm.multipass import Multipass
from agentvm.options import RunInput, from_env
from agentvm.run.pipeline import Run
from agentvm.run.request import build_request
from agentvm.settings import Settings
from agentvm.vault import load_vault

__all__ = ["QueueTimeout", "RunInput", "RunOptions", "RunResult", "UsageError", "run"]

#: The inputs of one run (``prompt`` bytes, ``agent``, ``model``, ``timeout``, ``workspace``, ``labels``, ...).
RunOptions = RunInput


@dataclass(frozen=True)
class RunResult:
    record: dict[str, Any]
    exit_code: int
    run_dir: Path


def run(
    options: RunInput,
    env: Mapping[str, str] | None = None,
    *,
    cancel: threading.Event | None = None,
    on_phase: Callable[[str], None] | None = None,
    out: TextIO | None = None,
    stdin: IO[bytes] | None = None,
    settings: Settings | None = None,
    use_env_defaults: bool = True,
    run_id: str | None = None,
) -> RunResult:
    """Run one prompt to the end. Raises ``UsageError`` (nothing created) and ``QueueTimeout`` (no VM slot).

    ``env`` replaces ``os.environ`` as the source of settings (a worker per simulated host passes its own);
    with ``use_env_defaults`` the run inputs it does not give come from that environment (AGENT, TIMEOUT, ...).
    Setting ``cancel`` interrupts the run (its VM is deleted, the record says ``interrupted``); ``on_phase``
    is called with each phase name as the run enters it (for heartbeats). ``run_id`` chooses the run's id (and
    folder) instead of a fresh one: UsageError when it is not of the run id form or its folder exists already.
    """
    begun = time.monotonic()
    settings = settings or Settings.load(env)
    inp = options.over(from_env(settings.env)) if use_env_defaults else options
    stream = out or sys.stderr
    mp = Multipass(settings.multipass_bin, settings.env)
    if run_id is not None and (settings.runs_dir / run_id).exists():
        raise UsageError(f"run id {run_id} is taken: {settings.runs_dir / run_id} exists")
    request = build_request(settings, inp, stdin=stdin, vault=load_vault(settings), mp=mp, run_id=run_id)
    pool = Pool(settings, mp)
    warm = pool.claim(request.golden_manifest_id)
    if warm is not None:
        request = dataclasses.replace(request, instance=warm.name, from_pool=True)
    validated = time.monotonic()
    executed = False
    try:
        cap = lambda: settings.max_vms - len(pool.ready())  # noqa: E731 - the pool's ready VMs count
        with host_slot(settings, request.instance, request.run_id, mp, out=stream, cap=cap):
            before = {"validate": validated - begun, "queue": time.monotonic() - validated}
            run = Run(settings, request, mp, out=stream, cancel=cancel, on_phase=on_phase, before=before)
            executed = True
            record, code = run.execute()
    finally:
        if warm is not None:
            if not executed:  # claimed but never used (queue time-out, Ctrl-C while queued)
                mp.delete(warm.name)
            pool.release(warm.name)
    run_dir = settings.runs_dir / request.run_id
    alert(record, run_dir, settings, stream)
    return RunResult(record=record, exit_code=code, run_dir=run_dir)
