"""``agentvm mcp`` with the service: each run is an ``AgentRun`` workflow, submitted like ``agentvm submit``.

The request is built by :func:`agentvm.service.submitcli.trigger_spec` (the trigger is ``mcp``); the workflow id
is a fresh run id. Status comes from the workflow, the result from its record; the patch and the output list
from the run folder the record names, when that folder is on this host (else the record's fields only). A
workspace folder is on this host, so such a run is pinned to this host's worker (``AGENTVM_HOST``).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentvm.errors import UsageError
from agentvm.run.request import RUN_ID_RE, new_run_id
from agentvm.service import client as svc
from agentvm.service import config, mcpread, naming, submitcli

_ENDED = ("COMPLETED", "FAILED", "CANCELED", "TERMINATED", "TIMED_OUT")


class ServiceBackend:
    name = "service"

    def __init__(self, env: Mapping[str, str], settings: config.Settings, client: Any) -> None:
        self.env = env
        self.settings = settings
        self.client = client
        try:
            self.host: str | None = naming.host_name(env)
        except UsageError:
            self.host = None

    async def start(self, prompt: bytes, options: Mapping[str, Any]) -> dict[str, Any]:
        given = {k: v for k, v in options.items() if v is not None}
        if given.get("workspace") and "://" not in given["workspace"]:
            if self.host is None:
                raise UsageError("a workspace folder is on this host, whose name is not valid: set AGENTVM_HOST")
            given["host"] = self.host  # the folder is here: the run goes to this host's worker
        spec = submitcli.trigger_spec(prompt, given, self.env, {"kind": "mcp", "name": None, "id": None})
        workflow_id = new_run_id()
        spec.trigger = {"kind": "mcp", "name": None, "id": workflow_id}
        await svc.submit(self.client, self.settings, spec, workflow_id)
        return {"run_id": workflow_id, "backend": self.name, "status": naming.QUEUED}

    async def _snapshot(self, run_id: str) -> dict[str, Any]:
        try:
            return await svc.snapshot(self.client, run_id)
        except Exception as exc:
            if "not found" in str(exc).lower():
                raise UsageError(f"no run {run_id} in the service (see list_runs)") from None
            raise

    async def status(self, run_id: str) -> dict[str, Any]:
        info = await self._snapshot(run_id)
        temporal = info["temporal_status"]
        status = info.get("status") or svc.TEMPORAL_STATUS.get(temporal, temporal.lower())
        return {
            "run_id": run_id,
            "backend": self.name,
            "status": status,
            "temporal_status": temporal,
            "phase": info.get("phase") or ("done" if temporal in _ENDED else None),
            "host": info.get("host"),
            "attempt": info.get("attempt"),
            "started_at": info.get("started_at"),
            "finished_at": info.get("closed_at"),
            "last_failure": mcpread.cut(info.get("last_failure"), 2000)[0],
        }

    def _folder(self, record: dict[str, Any]) -> Path | None:
        """The record's run folder if it is on this host (its AGENTVM_HOST or its machine name) and is that run's
        (named by the record's run id, holding a result.json of the same run id)."""
        where = record.get("location") if isinstance(record.get("location"), dict) else {}
        raw = where.get("folder")
        if where.get("host") not in (self.host, socket.gethostname()) or not isinstance(raw, str):
            return None
        folder = Path(raw)
        run_id = str(record.get("run_id") or "")
        if not folder.is_absolute() or folder.name != run_id or not RUN_ID_RE.fullmatch(run_id):
            return None
        found = mcpread.load_record(folder)
        return folder if found is not None and found.get("run_id") == run_id else None

    async def result(self, run_id: str) -> dict[str, Any]:
        state = await self.status(run_id)
        if state["temporal_status"] not in _ENDED:
            return {**state, "result_text": None, "patch": None, "outputs": []}
        outcome = await svc.wait(self.client, run_id)
        record = outcome.record
        if record is None:
            message = mcpread.cut(outcome.message, 2000)[0]
            return {**state, "exit_code": outcome.exit_code, "message": message, "result_text": None, "patch": None}
        folder = self._folder(record)
        if folder is not None:
            return {"run_id": run_id, "backend": self.name, **mcpread.folder_result(folder, record)}
        where = record.get("location") or {}
        note = f"the run folder is on {where.get('host', '?')}:{where.get('folder', '?')}, not readable here"
        found = mcpread.folder_result(None, record)
        return {"run_id": run_id, "backend": self.name, **found, "note": mcpread.cut(note, 500)[0]}

    async def wait(self, run_id: str, poll: float = 1.0) -> None:
        await self._snapshot(run_id)
        await svc.wait(self.client, run_id)

    async def cancel(self, run_id: str) -> dict[str, Any]:
        await self._snapshot(run_id)
        await svc.cancel(self.client, run_id)
        return {"run_id": run_id, "backend": self.name, "cancel_requested": True}

    async def list_runs(self, limit: int) -> list[dict[str, Any]]:
        runs = await svc.list_runs(self.client, limit)
        keys = ("workflow_id", "status", "temporal_status", "agent", "host", "started_at", "closed_at")
        return [
            {"run_id": r.workflow_id, **{k: v for k, v in r.as_dict().items() if k in keys}, "backend": self.name}
            for r in runs
        ]

    async def close(self) -> None:
        return None


async def connect(env: Mapping[str, str]) -> ServiceBackend:
    """The service backend; config.Unavailable or UsageError when the service cannot be reached or is misset."""
    settings = config.load(env, need_host=False)
    client = await config.connect(settings, env)
    return ServiceBackend(env, settings, client)
