"""The run pipeline end to end against the double, with a `custom` agent (a shell command in the VM).

The "golden" here is a plain launched-and-stopped instance: these tests are about the pipeline (inputs,
results, failures, teardown, secrets), not about the agents; the real agent tests use the built golden.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agentvm.run.record import validate
from tests.conftest import DOUBLE_BIN, REPO

pytestmark = pytest.mark.double
AGENTVM = [sys.executable, "-m", "agentvm", "run"]


@pytest.fixture
def agentvm(fake_golden, tmp_path):
    runs = tmp_path / "runs"

    def run(*args: str, env: dict[str, str] | None = None, input: bytes | None = None, timeout: float = 600):
        full = {**fake_golden, "AGENTVM_RUNS_DIR": str(runs), "AGENT": "custom", "PYTHONPATH": str(REPO / "src")}
        full.update(env or {})
        proc = subprocess.run(
            [*AGENTVM, *args], env=full, input=input, capture_output=True, timeout=timeout, check=False
        )
        folders = sorted(runs.iterdir()) if runs.exists() else []
        return proc, folders

    run.runs = runs
    run.env = fake_golden
    return run


def instances(env) -> list[str]:
    proc = subprocess.run(
        [str(DOUBLE_BIN), "list", "--format", "json"], env=env, capture_output=True, text=True, check=True
    )
    return [i["name"] for i in json.loads(proc.stdout)["list"] if "-run-" in i["name"]]


def result_of(folder: Path) -> dict:
    record = json.loads((folder / "result.json").read_text())
    validate(record)
    return record


def test_success_writes_a_complete_valid_result(agentvm):
    proc, folders = agentvm(
        "--agent-command", "sh -c 'cat; mkdir -p ~/output/sub; echo art > ~/output/sub/a.txt'", "hello world"
    )
    assert proc.returncode == 0, proc.stderr.decode()
    [folder] = folders
    record = result_of(folder)
    assert record["status"] == "succeeded" and record["exit_code"] == 0
    assert record["result_text"] == "hello world"
    assert (folder / "prompt.txt").read_bytes() == b"hello world"
    assert (folder / "output" / "sub" / "a.txt").read_text() == "art\n"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert set(record["timings"]) >= {"clone", "start", "ready", "upload", "agent", "fetch", "teardown", "total"}
    assert record["agent"]["exit_code"] == 0 and record["error"] is None
    assert instances(agentvm.env) == []
    assert "status:   succeeded" in proc.stderr.decode()


@pytest.mark.parametrize(
    "prompt",
    [
        b"'\"$(touch /tmp/pwned)\"' `touch /tmp/pwned` ; touch /tmp/pwned",
        b"--help --version -p",
        "emoji \U0001f600 and \u05e2\u05d1\u05e8\u05d9\u05ea \u0627\u0644\u0639\u0631\u0628\u064a\u0629".encode(),
        b"line one\nline two\n\n  indented\n",
        (b"0123456789abcdef" * 65536),  # 1 MiB
    ],
    ids=["shell-metacharacters", "leading-dashes", "emoji-rtl", "newlines", "1MiB"],
)
def test_prompt_reaches_the_agent_byte_for_byte(agentvm, tmp_path, prompt):
    prompt_file = tmp_path / "prompt.bin"
    prompt_file.write_bytes(prompt)
    command = "sh -c 'cat > ~/output/received; test ! -e /tmp/pwned'"
    proc, [folder] = agentvm("--agent-command", command, "--prompt-file", str(prompt_file))
    assert proc.returncode == 0, proc.stderr.decode()
    assert (folder / "output" / "received").read_bytes() == prompt
    assert not Path("/tmp/pwned").exists()


def test_prompt_from_stdin(agentvm):
    proc, [folder] = agentvm("--agent-command", "cat", "-", input=b"from stdin \xe2\x9c\x93")
    assert proc.returncode == 0
    assert result_of(folder)["result_text"] == "from stdin ✓"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--agent-command", "cat"], {"PROMPT": ""}, "the prompt is empty"),
        (["--agent", "nope", "hi"], {}, "unknown agent 'nope'"),
        (["--agent", "claude", "hi"], {"ANTHROPIC_API_KEY": "", "ANTHROPIC_AUTH_TOKEN": ""}, "needs ANTHROPIC_API_KEY"),
        (["--agent-command", "cat", "--workspace", "/definitely/missing", "hi"], {}, "is not a folder"),
        (
            ["--agent-command", "cat", "--timeout", "soon", "hi"],
            {},
            "TIMEOUT (--timeout) must be a positive whole number",
        ),
        (["--agent-command", "cat", "hi"], {"AGENTVM_PREFIX": "nogolden"}, "no golden VM nogolden-golden"),
        (["hi"], {}, "AGENT=custom needs AGENT_COMMAND"),
    ],
    ids=[
        "empty-prompt",
        "unknown-agent",
        "missing-credentials",
        "bad-workspace",
        "bad-timeout",
        "no-golden",
        "custom-without-command",
    ],
)
def test_bad_input_is_refused_before_anything_is_created(agentvm, args, env, message):
    proc, folders = agentvm(*args, env=env)
    assert proc.returncode == 2
    assert message in proc.stderr.decode()
    assert len(proc.stderr.decode().strip().splitlines()) == 1
    assert folders == [] and instances(agentvm.env) == []


def test_agent_failure(agentvm):
    proc, [folder] = agentvm("--agent-command", "sh -c 'echo partial; echo boom >&2; exit 7'", "x")
    record = result_of(folder)
    assert (proc.returncode, record["status"], record["agent"]["exit_code"]) == (1, "agent_failed", 7)
    assert "exited with code 7" in record["error"]["message"]
    assert (folder / "stderr.log").read_text() == "boom\n"
    assert instances(agentvm.env) == []


def test_agent_timeout(agentvm):
    proc, [folder] = agentvm("--agent-command", "sleep 600", "--timeout", "3", "x")
    record = result_of(folder)
    assert (proc.returncode, record["status"]) == (4, "timed_out")
    assert "TIMEOUT=3" in record["error"]["message"]
    assert instances(agentvm.env) == []


@pytest.mark.parametrize("command", ["clone", "start"])
def test_infrastructure_failure_leaves_nothing(agentvm, command):
    proc, [folder] = agentvm("--agent-command", "cat", "x", env={"MULTIPASS_DOUBLE_FAIL": f"{command}=daemon"})
    record = result_of(folder)
    assert (proc.returncode, record["status"]) == (3, "infra_failed")
    assert record["error"]["phase"] == command
    assert "cannot connect to the multipass socket" in record["error"]["message"]
    assert instances(agentvm.env) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_the_agent_runs_interrupts_and_tears_down(agentvm, sig):
    env = {**agentvm.env, "AGENTVM_RUNS_DIR": str(agentvm.runs), "AGENT": "custom", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [*AGENTVM, "--agent-command", "sleep 600", "x"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    seen = ""
    while "agent ..." not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "agent ..." in seen, seen
    time.sleep(3)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=300)
    [folder] = sorted(agentvm.runs.iterdir())
    record = result_of(folder)
    assert (proc.returncode, record["status"]) == (130, "interrupted"), err
    assert instances(agentvm.env) == []


def test_workspace_patch_applies_to_the_untouched_original(agentvm, tmp_path):
    original = tmp_path / "proj"
    original.mkdir()
    subprocess.run(["git", "init", "-q", str(original)], check=True)
    (original / "parser.py").write_text("def parse(x):\n    return x\n")
    (original / ".gitignore").write_text("secret.env\n")
    (original / "secret.env").write_text("TOKEN=do-not-upload\n")
    before = {p.name: p.read_bytes() for p in original.iterdir() if p.is_file()}
    command = (
        "sh -c 'test ! -e secret.env && sed -i s/return\\ x/return\\ x\\ +\\ 1/ parser.py && echo new > added.txt'"
    )
    proc, [folder] = agentvm("--agent-command", command, "--workspace", str(original), "fix it")
    assert proc.returncode == 0, proc.stderr.decode()
    record = result_of(folder)
    assert record["workspace"]["patch"] == "workspace.patch" and record["workspace"]["files"] == 2
    assert {p.name: p.read_bytes() for p in original.iterdir() if p.is_file()} == before
    check = subprocess.run(
        ["git", "-C", str(original), "apply", "--check", str(folder / "workspace.patch")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    patch = (folder / "workspace.patch").read_text()
    assert "+    return x + 1" in patch and "added.txt" in patch


def test_secrets_stay_out_of_command_lines_logs_and_results(agentvm, tmp_path):
    marker = f"sk-ant-marker-{uuid.uuid4().hex}"
    trace = tmp_path / "trace.jsonl"
    # The agent looks at every process's command line in the VM, and proves it has the key in its environment.
    command = "sh -c 'for i in 1 2 3; do ps -eo args; sleep 0.2; done > ~/output/ps.txt; test -n \"$MY_KEY\" && echo key-present'"
    proc, [folder] = agentvm(
        "--agent-command",
        command,
        "x",
        env={"MY_KEY": marker, "AGENT_CREDENTIALS": "MY_KEY", "MULTIPASS_DOUBLE_TRACE": str(trace)},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert result_of(folder)["result_text"] == "key-present"
    assert (
        "sleep 0.2" in (folder / "output" / "ps.txt").read_text() or (folder / "output" / "ps.txt").stat().st_size > 0
    )
    for path in folder.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path
    assert marker not in trace.read_text()
    assert marker not in proc.stderr.decode() + proc.stdout.decode()


def test_two_parallel_runs_get_separate_complete_folders(agentvm):
    env = {**agentvm.env, "AGENTVM_RUNS_DIR": str(agentvm.runs), "AGENT": "custom", "PYTHONPATH": str(REPO / "src")}
    procs = [
        subprocess.Popen(
            [*AGENTVM, "--agent-command", "cat", f"prompt {i}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for i in range(2)
    ]
    for p in procs:
        p.communicate(timeout=600)
        assert p.returncode == 0
    folders = sorted(agentvm.runs.iterdir())
    assert len(folders) == 2
    assert sorted(result_of(f)["result_text"] for f in folders) == ["prompt 0", "prompt 1"]
    assert instances(agentvm.env) == []


def test_keep_leaves_the_vm_and_says_how_to_reach_it(agentvm):
    proc, [folder] = agentvm("--agent-command", "cat", "--keep", "x")
    record = result_of(folder)
    name = record["instance"]["name"]
    try:
        assert record["instance"]["kept"] is True and name in instances(agentvm.env)
        assert f"multipass shell {name}" in proc.stderr.decode()
    finally:
        subprocess.run([str(DOUBLE_BIN), "delete", "--purge", name], env=agentvm.env, check=False)


def test_make_run_passes_the_prompt_exactly(agentvm, tmp_path):
    env = {**agentvm.env, "AGENTVM_RUNS_DIR": str(agentvm.runs), "PYTHONPATH": str(REPO / "src")}
    prompt = 'it\'s "$(touch /tmp/pwned)" `id` $HOME -- done'
    proc = subprocess.run(
        ["make", "--no-print-directory", "run", f"PROMPT={prompt}", "AGENT=custom", "AGENT_COMMAND=cat"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    [folder] = sorted(agentvm.runs.iterdir())
    assert (folder / "prompt.txt").read_text() == prompt
    assert not Path("/tmp/pwned").exists()
