"""``agentvm pool`` (``make pool POOL=N``, ``make pool-stop``): start, watch and stop the warm pool's keeper."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from agentvm.errors import Exit, UsageError
from agentvm.host import slots
from agentvm.host.pool import Keeper, Pool
from agentvm.multipass import Multipass
from agentvm.settings import Settings

FILL_TIMEOUT = 1800


def _say(text: str) -> None:
    print(f"agentvm pool: {text}", file=sys.stderr, flush=True)


def foreground(settings: Settings, size: int) -> int:
    pool = Pool(settings, Multipass(settings.multipass_bin, settings.env))
    keeper = Keeper(pool, size, _say)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: keeper.stop.set())
    return keeper.run()


def detach(settings: Settings, size: int) -> int:
    """Start the keeper in the background and return once the pool is full (or what fits under MAX_VMS)."""
    pool = Pool(settings, Multipass(settings.multipass_bin, settings.env))
    if pool.keeper_alive():
        _say("a keeper is already running; `make pool-stop` stops it")
        return Exit.AGENT_FAILED
    log = (pool.root / "keeper.log").open("ab")
    env = {**settings.env, "POOL": str(size)}
    subprocess.Popen(
        [sys.executable, "-m", "agentvm", "pool"], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip
    target = min(size, settings.max_vms)
    started = time.monotonic()
    deadline = started + FILL_TIMEOUT
    shown = -1
    while time.monotonic() < deadline:
        ready = len(pool.ready())
        if ready != shown:
            _say(f"{ready} of {target} VM(s) ready")
            shown = ready
        if ready >= target:
            return Exit.SUCCEEDED
        if not pool.keeper_alive() and time.monotonic() - started > 10:
            _say(f"the keeper stopped: see {pool.root / 'keeper.log'}")
            return Exit.INFRA_FAILED
        time.sleep(1)
    _say(f"the pool did not fill within {FILL_TIMEOUT} s: see {pool.root / 'keeper.log'}")
    return Exit.INFRA_FAILED


def stop(settings: Settings) -> int:
    pool = Pool(settings, Multipass(settings.multipass_bin, settings.env))
    pid_file = pool.root / "keeper.pid"
    if pool.keeper_alive() and pid_file.exists():
        pid = int(pid_file.read_text().strip() or 0)
        if pid > 0:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 600
        while pool.keeper_alive() and time.monotonic() < deadline:
            time.sleep(0.5)
    drained = pool.drain()
    _say(f"stopped; {drained} more VM(s) deleted" if drained else "stopped")
    return Exit.SUCCEEDED if not pool.keeper_alive() else Exit.INFRA_FAILED


def status(settings: Settings) -> int:
    pool = Pool(settings, Multipass(settings.multipass_bin, settings.env))
    alive = "running" if slots.is_locked(pool.root / "keeper.lock") else "not running"
    ready = pool.ready()
    print(f"keeper {alive}; {len(ready)} ready VM(s)" + "".join(f"\n  {vm.name}" for vm in ready))
    return Exit.SUCCEEDED


def main(settings: Settings, *, size: int | None, background: bool, halt: bool, show: bool) -> int:
    if halt:
        return stop(settings)
    if show:
        return status(settings)
    size = size if size is not None else settings.pool_size
    if size <= 0:
        raise UsageError("the pool needs a size: make pool POOL=2 (or agentvm pool --size 2)")
    return detach(settings, size) if background else foreground(settings, size)
