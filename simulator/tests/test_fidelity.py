"""Fidelity of the double's CLI layer to Multipass 1.16.3's source (exec command lines, signals, stop
while starting) and its robustness when several invocations run at once on one data folder."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from simulator.pytest_plugin import MultipassFn
from tests.conftest import DOUBLE_ADMIN, DOUBLE_BIN, REPO

pytestmark = pytest.mark.double

Run = Callable[..., subprocess.CompletedProcess]
OwnDouble = tuple[Run, Path, dict[str, str]]


# -- exec ---------------------------------------------------------------------------------------


def test_exec_working_directory_command_lines(multipass: MultipassFn, instance: str) -> None:
    # `cd DIR&&ARGS`, both escaped (exec.cpp, exec_success): a directory with a space works.
    assert multipass("exec", instance, "--", "mkdir", "-p", "/tmp/with space").returncode == 0
    assert multipass("exec", "-d", "/tmp/with space", instance, "--", "pwd").stdout == "/tmp/with space\n"
    # With sudo first: `sudo sh -c <escaped "cd DIR && sudo -u ubuntu ARGS joined unescaped">`. The inner
    # sh (root, through sudo) expands `$USER`, not the login shell of `ubuntu`...
    assert multipass("exec", "-d", "/tmp", instance, "--", "sudo", "echo", "$USER").stdout == "root\n"
    # ... and re-splits the arguments: `sh -c echo $(pwd)` runs `echo` with $0 set, printing an empty line.
    proc = multipass("exec", "-d", "/tmp", instance, "--", "sudo", "sh", "-c", "echo $(pwd)")
    assert (proc.returncode, proc.stdout) == (0, "\n"), proc.stderr
    assert multipass("exec", "-d", "/tmp", instance, "--", "sudo", "pwd").stdout == "/tmp\n"


def test_exec_option_clash_is_checked_before_the_argument_count(multipass: MultipassFn) -> None:
    proc = multipass("exec", "x", "-d", "/tmp", "-n")
    assert (proc.returncode, proc.stderr) == (1, "Options --working-directory and --no-map-working-directory clash\n")


def test_exec_missing_instance_error_is_printed_by_info_and_by_ssh_info(multipass: MultipassFn) -> None:
    # Without -d/-n the client first dispatches `info` (mount mapping) and prints its failure, then
    # `ssh_info` fails the same way (exec.cpp ignores info's return value).
    once = 'exec failed: The following errors occurred:\ninstance "nope" does not exist\n'
    assert multipass("exec", "nope", "--", "true").stderr == once * 2
    for flag in (["-n"], ["-d", "/tmp"]):
        proc = multipass("exec", *flag, "nope", "--", "true")
        assert (proc.returncode, proc.stderr) == (2, once)


def _pgrep(multipass: MultipassFn, instance: str, pattern: str) -> int:
    # `[s]leep` so that pgrep's own command line does not match
    return multipass("exec", "-n", instance, "--", "pgrep", "-f", "[" + pattern[0] + "]" + pattern[1:]).returncode


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_killing_multipass_exec_kills_the_inner_command_and_the_client_dies_by_the_signal(
    multipass: MultipassFn, double_env: dict[str, str], instance: str, sig: signal.Signals
) -> None:
    pattern = f"sleep 3000.{random.randrange(10**6):06d}"
    client = subprocess.Popen(
        [str(DOUBLE_BIN), "exec", "-n", instance, "--", "sh", "-c", f"echo started; {pattern}; echo survived"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=double_env,
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline() == b"started\n"
        assert _pgrep(multipass, instance, pattern) == 0
        client.send_signal(sig)
        assert client.wait(timeout=30) == -sig  # no handler in the real client: death by the signal
        assert b"survived" not in client.stdout.read()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    deadline = time.monotonic() + 10  # SIGKILL: the guard's parent-death signal, then its grace period
    while _pgrep(multipass, instance, pattern) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _pgrep(multipass, instance, pattern) == 1


def test_exec_killed_writes_the_trace_line(
    multipass: MultipassFn, double_env: dict[str, str], instance: str, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.jsonl"
    env = dict(double_env, MULTIPASS_DOUBLE_TRACE=str(trace))
    client = subprocess.Popen(
        [str(DOUBLE_BIN), "exec", "-n", instance, "--", "sh", "-c", "echo started; sleep 600"],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert client.stdout is not None and client.stdout.readline() == b"started\n"
    client.terminate()
    assert client.wait(timeout=30) == -signal.SIGTERM
    entry = json.loads(trace.read_text())
    assert entry["exit_code"] == 128 + signal.SIGTERM and entry["argv"][1] == "exec"


# -- transfer -----------------------------------------------------------------------------------


def test_transfer_recursive_both_ways_keeps_modes_and_links_and_owner_is_the_writer(
    multipass: MultipassFn, instance: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (tree / "sub" / "run.sh").chmod(0o755)
    (tree / "secret").write_text("s")
    (tree / "secret").chmod(0o600)
    (tree / "link").symlink_to("secret")
    (tree / "sub").chmod(0o750)
    tree.chmod(0o711)
    remote = f"/tmp/rtree-{uuid.uuid4().hex[:6]}"
    proc = multipass("transfer", "-r", str(tree), f"{instance}:{remote}")
    assert proc.returncode == 0, proc.stderr
    listing = multipass(
        "exec", "-n", instance, "--", "bash", "-c", f"cd {remote} && stat -c '%n %a %U %F' . sub sub/run.sh secret link"
    ).stdout.splitlines()
    assert listing == [
        ". 711 ubuntu directory",
        "sub 750 ubuntu directory",
        "sub/run.sh 755 ubuntu regular file",
        "secret 600 ubuntu regular file",
        "link 777 ubuntu symbolic link",
    ]
    # pull: owned by whoever ran multipass, the remote modes, symlinks kept
    assert multipass("exec", "-n", instance, "--", "chmod", "640", f"{remote}/secret").returncode == 0
    back = tmp_path / "back"
    proc = multipass("transfer", "-r", f"{instance}:{remote}", str(back))
    assert proc.returncode == 0, proc.stderr
    modes = {p: stat.S_IMODE(os.lstat(back / p).st_mode) for p in (".", "sub", "sub/run.sh", "secret")}
    assert modes == {".": 0o711, "sub": 0o750, "sub/run.sh": 0o755, "secret": 0o640}
    assert {os.lstat(back / p).st_uid for p in (".", "sub", "sub/run.sh", "secret", "link")} == {os.getuid()}
    assert os.readlink(back / "link") == "secret"
    # a single pulled file gets the remote file's permission bits too
    single = tmp_path / "single"
    assert multipass("transfer", f"{instance}:{remote}/secret", str(single)).returncode == 0
    assert (stat.S_IMODE(single.stat().st_mode), single.read_text()) == (0o640, "s")
    # without -r a directory is refused, in both directions
    proc = multipass("transfer", f"{instance}:{remote}", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert proc.stderr.endswith(f'[error] [sftp] omitting remote directory "{remote}": recursive mode not specified\n')
    proc = multipass("transfer", str(tree), f"{instance}:{remote}-2")
    assert proc.returncode == 2
    assert proc.stderr.endswith(f'[error] [sftp] omitting local directory "{tree}": recursive mode not specified\n')


# -- concurrency on one data folder -------------------------------------------------------------


@pytest.fixture(scope="module")
def own_double(double_env: dict[str, str]) -> Iterator[tuple[Run, Path, dict[str, str]]]:
    """A data folder of this module alone (so `status` and the end state are ours to check)."""
    env = dict(double_env)
    data = REPO / ".cache" / f"test-conc-{uuid.uuid4().hex[:8]}"
    env["MULTIPASS_DOUBLE_DATA"] = str(data)

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(DOUBLE_BIN), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
        )

    yield run, data, env
    subprocess.run(
        [sys.executable, str(DOUBLE_ADMIN), "down", "--data", str(data), "--purge", "--quiet"], check=False, timeout=300
    )


def _parallel(jobs: list[tuple[str, ...]], run: Run) -> list[subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(lambda argv: run(*argv), jobs))


def _ours_in_status(data: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(DOUBLE_ADMIN), "status"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [line for line in out.splitlines() if str(data) in line and not line.startswith("data folder:")]


def test_parallel_launches_clones_execs_and_purges_keep_the_state_consistent(own_double: OwnDouble) -> None:
    run, data, _ = own_double
    names = [f"par{i}" for i in range(4)]
    results = _parallel([("launch", "--name", n) for n in names], run)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    # exec on all four at once, and twice on the same one
    results = _parallel([("exec", "-n", n, "--", "cat", "/etc/hostname") for n in [*names, names[0]]], run)
    assert [r.stdout for r in results] == [f"{n}\n" for n in [*names, names[0]]]
    assert [r.returncode for r in _parallel([("stop", n) for n in names], run)] == [0] * 4
    # two clones of one source at once get distinct default names; clones of the others in parallel
    jobs = [("clone", names[0]), ("clone", names[0]), ("clone", names[1]), ("clone", names[2], "--name", "c2")]
    results = _parallel(jobs, run)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    made = sorted(r.stdout.split(" to ")[1].rstrip(".\n") for r in results)
    assert made == ["c2", "par0-clone1", "par0-clone2", "par1-clone1"]
    # purge some, start others, exec into a stopped one (auto-start), all at once
    jobs = [
        ("delete", "--purge", names[0], "par0-clone1"),
        ("delete", "--purge", "c2"),
        ("start", "par0-clone2"),
        ("exec", "-n", names[3], "--", "true"),
        ("exec", "-n", "par1-clone1", "--", "cat", "/etc/hostname"),
    ]
    results = _parallel(jobs, run)
    assert [r.returncode for r in results] == [0] * 5, [r.stderr for r in results]
    assert results[4].stdout == "par1-clone1\n"
    listed = {e["name"]: e["state"] for e in json.loads(run("list", "--format", "json").stdout)["list"]}
    assert listed == {
        "par0-clone2": "Running",
        "par1": "Stopped",
        "par1-clone1": "Running",
        "par2": "Stopped",
        "par3": "Running",
    }
    state = json.loads((data / "state.json").read_text())
    assert sorted(state["instances"]) == sorted(listed)
    assert sorted(p.name for p in (data / "instances").iterdir() if p.is_dir()) == sorted(listed)
    # every layer on disk is used by some instance, and every used layer exists
    used = {layer for rec in state["instances"].values() for layer in rec["layers"]}
    assert {p.name for p in (data / "layers").iterdir()} == used
    assert run("delete", "--all", "--purge").returncode == 0
    assert json.loads(run("list", "--format", "json").stdout)["list"] == []
    assert _ours_in_status(data) == []


def test_delete_purge_during_launch_leaves_nothing(own_double: OwnDouble) -> None:
    run, data, env = own_double
    name = "doomed"
    launcher = subprocess.Popen(
        [str(DOUBLE_BIN), "launch", "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while name not in run("list", "--format", "json").stdout and time.monotonic() < deadline:
            time.sleep(0.05)
        state = _state(run, name)
        stop = run("stop", name)
        if state == "Starting" and _state(run, name) == "Starting":
            # BaseVirtualMachine::check_state_for_shutdown: no graceful stop while starting
            assert (stop.returncode, stop.stderr) == (
                2,
                f"stop failed: Cannot shut down instance {name} while starting.\n",
            )
        purge = run("delete", "--purge", name)
        assert purge.returncode == 0, purge.stderr
        out, err = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    # either the launch finished before the purge got the instance, or it reports the instance gone
    assert launcher.returncode == 0 or f'instance "{name}" does not exist' in err, (out, err)
    assert json.loads(run("list", "--format", "json").stdout)["list"] == []
    assert not (data / "instances" / name).exists()
    assert _ours_in_status(data) == []
    # the name is free again
    assert run("launch", "--name", name).returncode == 0
    assert run("delete", "--purge", name).returncode == 0


def _state(run: Run, name: str) -> str | None:
    listed = json.loads(run("list", "--format", "json").stdout)["list"]
    return next((e["state"] for e in listed if e["name"] == name), None)
