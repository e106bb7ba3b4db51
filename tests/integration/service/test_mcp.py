"""``agentvm mcp`` driven by the official SDK's own client over stdio (mcp.client.stdio + ClientSession), on the
Multipass double with the ``custom`` agent on a fake golden: the tools and their schemas, a run through
``run_in_vm`` with its status, result text, patch and output list, cancel, hostile arguments (nothing created),
and the same through the service (an ``AgentRun`` workflow)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from svc_helpers import run_vms, wait_for
from test_service_double import Service, host_a, host_env  # noqa: F401 - host_a is a fixture

from tests.conftest import REPO

pytestmark = [pytest.mark.double, pytest.mark.slow]

CHANGE = "sh -c 'cat > /dev/null; echo hi > new.txt; mkdir -p ~/output/sub; echo art > ~/output/sub/a.txt; echo done'"
TOOLS = {"run_in_vm", "run_status", "run_result", "cancel_run", "list_runs"}


def call(env: dict, backend: str, errlog: Path, script) -> Any:
    """Start `agentvm mcp --backend BACKEND`, initialise a session, run ``script(session)``, return its value."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "agentvm.cli", "mcp", "--backend", backend], env=env, cwd=str(REPO)
    )

    async def main() -> Any:
        with errlog.open("a") as err:
            async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                return await script(session)

    return anyio.run(main)


async def tool(session: ClientSession, name: str, **arguments: Any) -> tuple[bool, Any]:
    """(is_error, the structured result or the error text)."""
    result = await session.call_tool(name, arguments, read_timeout_seconds=900)
    if result.is_error:
        return True, " ".join(getattr(c, "text", "") for c in result.content)
    return False, result.structured_content


def workspace(root: Path) -> Path:
    ws = root / "proj"
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / "README").write_text("a project\n")
    return ws


@pytest.fixture
def local_env(fake_golden, tmp_path) -> dict:
    env = host_env(fake_golden, tmp_path, "mcphost")
    env.pop("MULTIPASS_DOUBLE_TRACE", None)
    env["AGENT_COMMAND"] = CHANGE
    return env


def test_tools_are_listed_with_their_input_schemas(local_env, tmp_path):
    async def script(session):
        return (await session.list_tools()).tools

    tools = {t.name: t for t in call(local_env, "local", tmp_path / "mcp.log", script)}
    assert set(tools) == TOOLS
    run = tools["run_in_vm"].input_schema
    assert run["required"] == ["prompt"]
    assert set(run["properties"]) == {"prompt", "agent", "workspace", "ref", "timeout", "model", "wait"}
    assert run["properties"]["prompt"]["type"] == "string"
    assert tools["run_status"].input_schema["required"] == ["run_id"]
    assert tools["list_runs"].input_schema["properties"]["limit"]["type"] == "integer"


def check_result(result: dict, runs: Path) -> None:
    assert (result["status"], result["exit_code"]) == ("succeeded", 0), result
    assert result["result_text"].strip() == "done"
    assert "new.txt" in (result["patch"] or "") and "+hi" in result["patch"], json.dumps(result)
    assert result["patch_truncated"] is False
    assert result["outputs"] == [{"name": "sub/a.txt", "bytes": 4}] and result["outputs_truncated"] is False
    folder = Path(result["folder"])
    assert folder.parent == runs
    record = json.loads((folder / "result.json").read_text())
    assert record["trigger"]["kind"] == "mcp"


def test_a_local_run_through_run_in_vm(local_env, tmp_path):
    ws = workspace(tmp_path)

    async def script(session):
        ok, started = await tool(session, "run_in_vm", prompt="add a file", workspace=str(ws), timeout=300)
        assert not ok and started["status"] == "queued" and started["backend"] == "local", started
        run_id = started["run_id"]
        seen = set()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            _, state = await tool(session, "run_status", run_id=run_id)
            seen.add(state["status"])
            if state["status"] not in ("queued", "running"):
                break
            await anyio.sleep(0.5)
        _, result = await tool(session, "run_result", run_id=run_id)
        _, waited = await tool(session, "run_in_vm", prompt="again", workspace=str(ws), wait=True)
        _, listed = await tool(session, "list_runs", limit=5)
        return state, seen, result, listed, waited

    state, seen, result, listed, waited = call(local_env, "local", tmp_path / "mcp.log", script)
    runs = Path(local_env["AGENTVM_RUNS_DIR"])
    assert state["status"] == "succeeded" and state["phase"] == "done" and state["started_at"], state
    assert "running" in seen
    check_result(result, runs)
    check_result(waited, runs)
    assert [r["run_id"] for r in listed["runs"]][:2] == [waited["run_id"], result["run_id"]]
    assert (runs / result["run_id"] / "prompt.txt").read_bytes() == b"add a file"
    assert json.loads((runs / result["run_id"] / "result.json").read_text())["trigger"]["id"] == result["run_id"]
    assert (ws / "new.txt").exists() is False  # the host's folder is never written to
    assert run_vms(local_env) == []


def test_a_local_run_on_a_git_workspace(local_env, tmp_path):
    ws = workspace(tmp_path)
    subprocess.run(["git", "-C", str(ws), "add", "README"], check=True)
    subprocess.run(
        ["git", "-C", str(ws), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one"], check=True
    )

    async def script(session):
        return await tool(session, "run_in_vm", prompt="add a file", workspace=f"file://{ws}", wait=True)

    is_error, result = call(local_env, "local", tmp_path / "mcp.log", script)
    assert not is_error, result
    check_result(result, Path(local_env["AGENTVM_RUNS_DIR"]))
    scratch = Path(local_env["AGENTVM_STATE_DIR"]) / "mcp" / result["run_id"]
    assert sorted(p.name for p in scratch.iterdir()) == ["pid", "run.log"]  # the fetched clone is removed
    assert oct(scratch.stat().st_mode & 0o777) == "0o700"


def test_cancel_run_interrupts_the_local_run_and_deletes_its_vm(local_env, tmp_path):
    env = {**local_env, "AGENT_COMMAND": "sh -c 'sleep 300'"}

    async def script(session):
        _, started = await tool(session, "run_in_vm", prompt="sleep", timeout=600)
        run_id = started["run_id"]
        for _ in range(600):
            _, state = await tool(session, "run_status", run_id=run_id)
            if state["phase"] == "agent":
                break
            await anyio.sleep(0.5)
        is_error, cancelled = await tool(session, "cancel_run", run_id=run_id)
        assert not is_error and cancelled["cancel_requested"], cancelled
        for _ in range(600):
            _, state = await tool(session, "run_status", run_id=run_id)
            if state["status"] not in ("queued", "running"):
                return state
            await anyio.sleep(0.5)
        return state

    state = call(env, "local", tmp_path / "mcp.log", script)
    assert (state["status"], state["exit_code"]) == ("interrupted", 130), state
    assert run_vms(local_env) == []


HOSTILE = [
    ("run_in_vm", {"prompt": 123}, "string"),
    ("run_in_vm", {"prompt": "x", "timeout": "30"}, "integer"),
    ("run_in_vm", {"prompt": "x", "wait": "yes"}, "boolean"),
    ("run_in_vm", {"prompt": "x" * (1024 * 1024 + 1)}, "1 MiB"),
    ("run_in_vm", {"prompt": "   "}, "empty"),
    ("run_in_vm", {"prompt": "x", "timeout": 0}, "timeout"),
    ("run_in_vm", {"prompt": "x", "agent": "nosuchagent"}, "nosuchagent"),
    ("run_in_vm", {"prompt": "x", "workspace": "/nonexistent/folder"}, "not a folder"),
    ("run_in_vm", {"prompt": "x", "workspace": "ext::sh -c touch% /tmp/x"}, "workspace"),
    ("run_in_vm", {"prompt": "x", "workspace": "git://example.invalid/r"}, "git"),
    ("run_in_vm", {"prompt": "x", "model": "a\nb"}, "control"),
    ("run_status", {"run_id": "../../etc"}, "run_id"),
    ("run_result", {"run_id": "20261121t221500-3f9c1a/../../etc"}, "run_id"),
    ("run_result", {"run_id": "20261121t221500-3f9c1a"}, "no run"),
    ("cancel_run", {"run_id": "20261121t221500-3f9c1a"}, "no run"),
    ("run_status", {"run_id": 5}, "string"),
    ("list_runs", {"limit": 100000}, "limit"),
    ("no_such_tool", {}, "no_such_tool"),
]


def test_hostile_arguments_are_tool_errors_and_create_nothing(local_env, tmp_path):
    canary = tmp_path / "canary"
    cases = [
        *HOSTILE,
        ("run_in_vm", {"prompt": "x", "workspace": f"$(touch {canary})"}, "not a folder"),
        ("run_in_vm", {"prompt": "x", "agent": f"$(touch {canary})"}, "agent"),
        ("run_in_vm", {"prompt": f"$(touch {canary})", "agent": "nosuchagent"}, "nosuchagent"),
    ]

    async def script(session):
        answers = [await tool(session, name, **args) for name, args, _ in cases]
        _, listed = await tool(session, "list_runs")
        return answers, listed

    answers, listed = call(local_env, "local", tmp_path / "mcp.log", script)
    for (name, args, expected), (is_error, text) in zip(cases, answers, strict=True):
        assert is_error, (name, str(args)[:80], text)
        assert expected.lower() in text.lower(), (name, str(args)[:80], text[:300])
        assert "Traceback" not in text and len(text) < 4000
    assert listed["runs"] == []
    assert not Path(local_env["AGENTVM_RUNS_DIR"]).exists() or not any(Path(local_env["AGENTVM_RUNS_DIR"]).iterdir())
    assert not (Path(local_env["AGENTVM_STATE_DIR"]) / "mcp").exists()
    assert not canary.exists()
    assert "Traceback" not in (tmp_path / "mcp.log").read_text()


def test_through_the_service(host_a, tmp_path):  # noqa: F811 - host_a is the fixture
    svc = Service({**host_a, "AGENT_COMMAND": CHANGE}, Path(host_a["AGENTVM_STATE_DIR"]).parent)
    svc.start()
    try:
        ws = workspace(tmp_path)

        async def script(session):
            is_error, started = await tool(session, "run_in_vm", prompt="add a file", workspace=str(ws))
            assert not is_error and started["backend"] == "service", started
            _, result = await tool(session, "run_in_vm", prompt="add a file", workspace=str(ws), wait=True)
            _, state = await tool(session, "run_status", run_id=started["run_id"])
            _, listed = await tool(session, "list_runs", limit=5)
            _, unknown = await tool(session, "run_status", run_id="20261121t221500-3f9c1a")
            while state["status"] in ("queued", "running"):
                await anyio.sleep(0.5)
                _, state = await tool(session, "run_status", run_id=started["run_id"])
            return started, result, state, listed, unknown

        started, result, state, listed, unknown = call(svc.client_env(), "auto", tmp_path / "mcp.log", script)
        assert result["backend"] == "service" and result["run_id"] != started["run_id"]
        check_result(result, Path(host_a["AGENTVM_RUNS_DIR"]))
        assert (state["run_id"], state["status"], state["phase"]) == (started["run_id"], "succeeded", "done")
        assert {started["run_id"], result["run_id"]} <= {r["run_id"] for r in listed["runs"]}
        assert "no run" in unknown
        wait_for(lambda: run_vms(host_a) == [], 600, "the runs to end")
    finally:
        assert svc.proc.stop(signal.SIGTERM) == 0, svc.proc.output()[-3000:]
