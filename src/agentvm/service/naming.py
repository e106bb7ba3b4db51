"""Names the service gives things: task queues, hosts, workflow ids, search attributes and their values.

Pure functions without the Temporal SDK: the workflow module, the worker, the client and the tests share them.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping

from agentvm.errors import UsageError

DEFAULT_TASK_QUEUE = "agentvm"
WORKFLOW_TYPE = "AgentRun"
RUN_ACTIVITY = "run_agent"
ALERT_ACTIVITY = "alert_lost_run"
PROGRESS_SIGNAL = "attempt_started"
PROGRESS_QUERY = "progress"

# Custom search attributes (registered on the embedded dev server at start; on a cluster, see docs/service.md).
SA_STATUS = "AgentvmStatus"
SA_AGENT = "AgentvmAgent"
SA_HOST = "AgentvmHost"
SA_LABELS = "AgentvmLabels"
SEARCH_ATTRIBUTES = {SA_STATUS: "Keyword", SA_AGENT: "Keyword", SA_HOST: "Keyword", SA_LABELS: "KeywordList"}

# AgentvmStatus: the run statuses of result.json, plus the states before a record exists.
QUEUED = "queued"
RUNNING = "running"
REJECTED = "rejected"  # a usage error found on the worker (nothing was created); never retried
LOST = "lost"  # no attempt produced a record (every worker died or shut down under it)

_QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$")


def task_queue(env: Mapping[str, str]) -> str:
    """The shared task queue every worker polls (``AGENTVM_TASK_QUEUE``, default ``agentvm``)."""
    name = (env.get("AGENTVM_TASK_QUEUE") or DEFAULT_TASK_QUEUE).strip()
    if not _QUEUE_RE.fullmatch(name):
        raise UsageError(
            f"AGENTVM_TASK_QUEUE {name!r} must be letters, digits, '.', '_' or '-' (at most 100), starting with a"
            " letter or digit"
        )
    return name


def check_host(name: str, what: str = "host") -> str:
    if not _HOST_RE.fullmatch(name):
        raise UsageError(
            f"{what} {name!r} must be letters, digits, '.', '_' or '-' (at most 63), starting and ending with a"
            " letter or digit"
        )
    return name


def host_name(env: Mapping[str, str]) -> str:
    """This worker's host name: ``AGENTVM_HOST``, else the machine's short host name."""
    raw = (env.get("AGENTVM_HOST") or "").strip()
    if raw:
        return check_host(raw, "AGENTVM_HOST")
    name = socket.gethostname().split(".")[0] or "localhost"
    return check_host(re.sub(r"[^A-Za-z0-9._-]", "-", name).strip("-._") or "localhost", "the host name")


def host_queue(shared: str, host: str) -> str:
    """The task queue of one host: runs pinned there (``agentvm submit --host``)."""
    return f"{shared}@{host}"


def check_workflow_id(value: str) -> str:
    """A workflow id given by a caller (an idempotency key, or an id for ``status``/``cancel``)."""
    if not _ID_RE.fullmatch(value):
        raise UsageError(
            f"the key/id {value!r} must be 1 to 200 letters, digits or ._:@/+=- characters, starting with a letter"
            " or digit"
        )
    return value


def workflow_id(key: str | None, run_id: str) -> str:
    """The caller's idempotency key when given (submitting it twice starts one run), else a fresh run id."""
    return check_workflow_id(key) if key is not None else run_id
