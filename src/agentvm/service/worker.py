"""The worker of one Multipass host: polls the shared task queue and the host's own queue, runs ``AgentRun``
workflows and their ``run_agent`` activities, at most MAX_VMS runs at a time (one
:class:`~agentvm.service.gate.HostGate` for both queues).

At start it reaps the host's leftover run VMs (those of a worker that died under its runs: their liveness locks
are gone) and stale workspace scratch folders. On shutdown it stops polling, gives running runs
``AGENTVM_WORKER_DRAIN`` seconds (default 0) to finish, then interrupts them: their VMs are deleted and each run
is tried again by whichever worker takes it next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TextIO

from agentvm.errors import UsageError
from agentvm.host.reaper import Reaper
from agentvm.multipass import Multipass, MultipassError
from agentvm.service import config, gitws, naming
from agentvm.service.activities import RunActivities, take_alert_env
from agentvm.service.gate import HostGate
from agentvm.service.workflows import AgentRun
from agentvm.settings import Settings

HEARTBEAT_THROTTLE = timedelta(seconds=2)


async def ensure_search_attributes(client: Any, namespace: str, say: Any) -> bool:
    """Register agentvm's search attributes when missing (works on the dev server and self-hosted clusters;
    Temporal Cloud needs them created in its UI or CLI). Returns whether they are all present."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest

    kinds = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    }
    try:
        listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
        missing = {n: kinds[k] for n, k in naming.SEARCH_ATTRIBUTES.items() if n not in listed.custom_attributes}
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(search_attributes=missing, namespace=namespace)
            )
            say(f"registered search attributes {', '.join(sorted(missing))}")
        return True
    except Exception as exc:
        commands = "; ".join(
            f"temporal operator search-attribute create --name {n} --type {k}"
            for n, k in naming.SEARCH_ATTRIBUTES.items()
        )
        say(f"warning: cannot check or register the search attributes ({str(exc)[:200]}); create them: {commands}")
        return False


class HostWorker:
    """Both workers of this host, sharing one client, one thread pool and one activity cap."""

    def __init__(self, settings: config.Settings, client: Any, out: TextIO = sys.stderr) -> None:
        self.settings = settings
        self.client = client
        self.out = out
        host = Settings.load()
        self.max_vms = host.max_vms
        self.executor = ThreadPoolExecutor(max_workers=self.max_vms + 2, thread_name_prefix="agentvm-run")
        self.gate = HostGate(self.max_vms)
        runs_dir = host.runs_dir
        self.activities = RunActivities(
            host=settings.host,
            executor=self.executor,
            scratch=settings.service_dir / "workspaces",
            alert_env=take_alert_env(),
            out=out,
            runs_dir=runs_dir,
        )
        common: dict[str, Any] = {
            "identity": f"agentvm-{settings.host}-{os.getpid()}",
            "max_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
            "default_heartbeat_throttle_interval": HEARTBEAT_THROTTLE,
            "graceful_shutdown_timeout": timedelta(seconds=settings.drain),
            "disable_eager_activity_execution": True,
        }
        from temporalio.worker import Worker

        self.shared = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[AgentRun],
            activities=[self.activities.run_agent, self.activities.alert_lost_run],
            tuner=self.gate.tuner("shared"),
            **common,
        )
        self.pinned = Worker(
            client,
            task_queue=settings.host_queue,
            activities=[self.activities.run_agent],
            tuner=self.gate.tuner("host", workflow_slots=1),
            **common,
        )

    def say(self, text: str) -> None:
        print(f"agentvm worker {self.settings.host}: {text}", file=self.out, flush=True)

    def prepare(self) -> None:
        """Reap this host's leftover run VMs and scratch folders (a worker that died left them)."""
        try:
            host = Settings.load()
            report = Reaper(host, Multipass(host.multipass_bin, host.env)).reap()
        except (MultipassError, UsageError, OSError, ValueError) as exc:
            self.say(f"warning: could not reap leftover run VMs: {exc}")
            return
        if report.deleted:
            self.say(f"reaped {len(report.deleted)} leftover run VM(s): {', '.join(report.deleted)}")
        for name, error in report.failed.items():
            self.say(f"warning: could not delete {name}: {error}")
        removed = gitws.remove_stale(self.settings.service_dir / "workspaces")
        if removed:
            self.say(f"removed {removed} stale workspace folder(s)")

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Poll until ``stop`` is set (or a worker fails), then shut down cleanly."""
        tasks = [asyncio.create_task(self.shared.run()), asyncio.create_task(self.pinned.run())]
        self.say(
            f"polling {self.settings.task_queue} and {self.settings.host_queue} on {self.settings.address}"
            f" (namespace {self.settings.namespace}), at most {self.max_vms} run(s) at a time"
        )
        if on_ready is not None:
            on_ready()
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            self.say("stopping: no new runs; interrupting the running ones (their VMs are deleted)")
            await asyncio.gather(self.shared.shutdown(), self.pinned.shutdown(), return_exceptions=True)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self.executor.shutdown(wait=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
        if stop.is_set():
            self.say("stopped")


async def serve(
    settings: config.Settings,
    stop: asyncio.Event,
    out: TextIO = sys.stderr,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Connect, prepare the host, run the worker until ``stop`` is set."""
    host = Settings.load()
    try:
        _ = Multipass(host.multipass_bin, host.env).binary  # it must exist before the worker polls
    except MultipassError as exc:
        raise UsageError(f"{exc}: install Multipass 1.15+ (see README) or set MULTIPASS_BIN") from None
    client = await config.connect(settings)
    worker = HostWorker(settings, client, out)
    await ensure_search_attributes(client, settings.namespace, worker.say)
    await asyncio.get_running_loop().run_in_executor(None, worker.prepare)
    with contextlib.suppress(asyncio.CancelledError):
        await worker.run(stop, on_ready)
