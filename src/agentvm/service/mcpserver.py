"""``agentvm mcp``: an MCP server on stdio (the official SDK's ``MCPServer``) that hands tasks to disposable VMs.

Tools: ``run_in_vm``, ``run_status``, ``run_result``, ``cancel_run``, ``list_runs`` (docs/triggers.md). The
back end is chosen once at start: the service when it answers (runs are ``AgentRun`` workflows), else local
runs (``agentvm run`` children); ``--backend service|local`` forces one. Every argument is data: its type is
checked strictly, its size bounded, and a bad one is a tool error (``isError``) before anything is created.
stdout is the protocol's channel: this module logs to stderr only.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, Strict

from agentvm.errors import UsageError
from agentvm.run.request import RUN_ID_RE

MAX_PROMPT = 1024 * 1024
MAX_TIMEOUT = 7 * 24 * 3600
MAX_LIST = 200
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

INSTRUCTIONS = (
    "agentvm runs an AI agent CLI on a prompt inside a disposable VM and gives back its answer, a patch of the"
    " workspace and the files it wrote to ~/output. Start a run with run_in_vm (it returns a run_id at once, or"
    " waits with wait=true), then poll run_status and read run_result. The VM is deleted after each run."
)


def _say(text: str) -> None:
    print(f"agentvm mcp: {text}", file=sys.stderr, flush=True)


# --- argument checks (everything here is the caller's data) ------------------------------------------------


def _text(value: str | None, what: str, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > limit:
        raise UsageError(f"{what} has {len(value)} characters; at most {limit}")
    if _CONTROL.search(value):
        raise UsageError(f"{what} must not contain control characters")
    return value


def check_prompt(prompt: str) -> bytes:
    try:
        data = prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("prompt is not valid Unicode text (a lone surrogate?)") from None
    if len(data) > MAX_PROMPT:
        raise UsageError(f"prompt has {len(data)} bytes; the limit is {MAX_PROMPT} (1 MiB)")
    if not data.strip():
        raise UsageError("prompt is empty: say what the agent should do")
    return data


def check_run_id(run_id: str) -> str:
    if len(run_id) > 64 or not RUN_ID_RE.fullmatch(run_id):
        raise UsageError("run_id must be a run id as run_in_vm returns it, like 20261121t221500-3f9c1a")
    return run_id


def run_options(
    agent: str | None, workspace: str | None, ref: str | None, timeout: int | None, model: str | None
) -> dict[str, Any]:
    """The run options of a run_in_vm call, checked for shape (the run's own checks come after)."""
    agent = _text(agent, "agent", 32)
    if agent is not None and not _NAME.fullmatch(agent):
        raise UsageError("agent must be an agent name such as claude, codex, gemini, opencode, crush or custom")
    if timeout is not None and not 1 <= timeout <= MAX_TIMEOUT:
        raise UsageError(f"timeout must be 1 to {MAX_TIMEOUT} seconds, got {timeout}")
    workspace = _text(workspace, "workspace", 4096)
    ref = _text(ref, "ref", 256)
    if ref is not None and (workspace is None or "://" not in workspace):
        raise UsageError("ref is for a git workspace (workspace given as an https://, ssh:// or file:// URL)")
    if workspace is not None and "://" in workspace:
        from agentvm.service.spec import check_git_url, check_ref

        check_git_url(workspace)
        if ref is not None:
            check_ref(ref)
    return {
        "agent": agent,
        "workspace": workspace,
        "ref": ref,
        "timeout": timeout,
        "model": _text(model, "model", 200),
    }


# --- the server ------------------------------------------------------------------------------------------------

Prompt = Annotated[str, Strict(), Field(description="the task for the agent (text, at most 1 MiB)")]
Agent = Annotated[
    str | None, Strict(), Field(description="claude, codex, gemini, opencode, crush or custom (default: AGENT)")
]
Workspace = Annotated[
    str | None,
    Strict(),
    Field(description="a git URL (https://, ssh://, file://) or a folder on this host, copied into ~/workspace"),
]
Ref = Annotated[str | None, Strict(), Field(description="branch, tag or commit of a git workspace (default HEAD)")]
Timeout = Annotated[int | None, Strict(), Field(description="the agent's wall-clock limit in seconds")]
Model = Annotated[str | None, Strict(), Field(description="the model, for agents that take one")]
Wait = Annotated[bool, Strict(), Field(description="wait for the end and return what run_result returns")]
RunId = Annotated[str, Strict(), Field(description="the run_id that run_in_vm returned")]
Limit = Annotated[int, Strict(), Field(description=f"how many of the newest runs (1-{MAX_LIST})")]


async def _call(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def build(backend: Any) -> Any:
    """The MCPServer with agentvm's tools over ``backend`` (a LocalBackend or a ServiceBackend)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from agentvm.service import config, gitws

    server = MCPServer(name="agentvm", instructions=INSTRUCTIONS, log_level="WARNING")

    async def guarded(fn: Any, *args: Any) -> Any:
        try:
            return await _call(fn(*args))
        except (UsageError, config.Unavailable, gitws.FetchFailed) as exc:
            raise ToolError(str(exc)) from None
        except Exception as exc:
            if type(exc).__name__ != "RPCError":
                raise
            raise ToolError(f"the service refused the request: {str(exc)[:500]}") from None

    @server.tool()
    async def run_in_vm(
        prompt: Prompt,
        agent: Agent = None,
        workspace: Workspace = None,
        ref: Ref = None,
        timeout: Timeout = None,
        model: Model = None,
        wait: Wait = False,
    ) -> dict[str, Any]:
        """Run an AI agent on a prompt in a fresh disposable VM. Returns {run_id, status, backend} at once, or
        with wait=true the run's result (as run_result) when it has ended."""

        async def start() -> dict[str, Any]:
            data = check_prompt(prompt)
            started = await _call(backend.start(data, run_options(agent, workspace, ref, timeout, model)))
            if not wait:
                return dict(started)
            await backend.wait(started["run_id"])
            return dict(await _call(backend.result(started["run_id"])))

        return dict(await guarded(start))

    @server.tool()
    async def run_status(run_id: RunId) -> dict[str, Any]:
        """A run's status (queued, running, succeeded, agent_failed, timed_out, infra_failed, interrupted,
        rejected, lost), its phase and timestamps."""
        return dict(await guarded(lambda: backend.status(check_run_id(run_id))))

    @server.tool()
    async def run_result(run_id: RunId) -> dict[str, Any]:
        """A run's result: status, exit_code, result_text, the workspace patch (at most 256 KiB, with
        patch_truncated) and the files the agent wrote to ~/output (names and sizes)."""
        return dict(await guarded(lambda: backend.result(check_run_id(run_id))))

    @server.tool()
    async def cancel_run(run_id: RunId) -> dict[str, Any]:
        """Cancel a run: its VM is deleted and its record says interrupted."""
        return dict(await guarded(lambda: backend.cancel(check_run_id(run_id))))

    @server.tool()
    async def list_runs(limit: Limit = 20) -> dict[str, Any]:
        """The newest runs with their status."""

        def rows() -> Any:
            if not 1 <= limit <= MAX_LIST:
                raise UsageError(f"limit must be 1 to {MAX_LIST}, got {limit}")
            return backend.list_runs(limit)

        return {"backend": backend.name, "runs": list(await guarded(rows))}

    return server


async def choose(kind: str, env: Mapping[str, str]) -> Any:
    """The back end: ``service`` or ``local``; ``auto`` tries the service when one is configured or running."""
    from agentvm.host import slots
    from agentvm.service import config, mcplocal, mcpremote

    if kind == "local":
        return mcplocal.LocalBackend(env)
    if kind == "service":
        return await mcpremote.connect(env)
    settings = config.load(env, need_host=False)
    if settings.embedded and not slots.is_locked(settings.service_dir / "service.lock"):
        _say("no agentvm service is running: runs are local (agentvm run in the background)")
        return mcplocal.LocalBackend(env)
    try:
        backend = await mcpremote.connect(env)
    except config.Unavailable as exc:
        _say(f"{exc}; runs are local instead")
        return mcplocal.LocalBackend(env)
    _say(f"runs are submitted to the service at {settings.address}")
    return backend


async def serve(kind: str, env: Mapping[str, str]) -> int:
    backend = await choose(kind, env)
    try:
        await build(backend).run_stdio_async()
    finally:
        await backend.close()
    return 0


def add_parser(sub: Any) -> None:
    m = sub.add_parser("mcp", help="an MCP server on stdio: run_in_vm, run_status, run_result, cancel_run, list_runs")
    m.add_argument(
        "--backend",
        choices=("auto", "service", "local"),
        default=None,
        help="where runs go (default $AGENTVM_MCP_BACKEND or auto: the service if it answers, else local runs)",
    )


def backend_kind(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    kind = args.backend or env.get("AGENTVM_MCP_BACKEND") or "auto"
    if kind not in ("auto", "service", "local"):
        raise UsageError(f"AGENTVM_MCP_BACKEND must be auto, service or local, got {kind[:40]!r}")
    return kind
