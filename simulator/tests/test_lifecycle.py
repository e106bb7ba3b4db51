"""State machine of the double with real instances: launch with user-data, isolation, stop/start,
snapshots, clones, delete/recover/purge, faults and the trace."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.pytest_plugin import MultipassFn

# The tests build on each other (one instance, its clones in order): `make test` runs a module on one worker.
pytestmark = pytest.mark.double

USER_DATA = """#cloud-config
write_files:
  - path: /etc/agentvm-test
    content: "written by cloud-init\\n"
runcmd:
  - [sh, -c, "echo runcmd-ok > /var/tmp/runcmd"]
"""


def state_of(multipass: MultipassFn, name: str) -> str:
    listed = json.loads(multipass("list", "--format", "json").stdout)["list"]
    return next(e["state"] for e in listed if e["name"] == name)


@pytest.fixture(scope="module")
def vm(multipass: MultipassFn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An instance launched with user-data; the tests below drive it through its whole life in order."""
    name = "life-" + uuid.uuid4().hex[:6]
    user_data = tmp_path_factory.mktemp("ud") / "ud.yaml"
    user_data.write_text(USER_DATA)
    proc = multipass("launch", "--name", name, "--cloud-init", str(user_data), "--cpus", "2", "--memory", "2G")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(f"Launched: {name}\n")
    yield name
    multipass("delete", "--purge", name, f"{name}-clone1", f"{name}-clone2", f"{name}-copy")


def test_user_data_applied_and_hostname_set(multipass: MultipassFn, vm: str) -> None:
    assert multipass("exec", vm, "--", "cat", "/etc/hostname").stdout == f"{vm}\n"
    assert multipass("exec", vm, "--", "cat", "/etc/agentvm-test").stdout == "written by cloud-init\n"
    assert multipass("exec", vm, "--", "cat", "/var/tmp/runcmd").stdout == "runcmd-ok\n"
    status = multipass("exec", vm, "--", "cloud-init", "status").stdout
    assert "done" in status


def test_files_are_isolated_between_instances_and_host(multipass: MultipassFn, vm: str, instance: str) -> None:
    marker = f"/tmp/isolation-{uuid.uuid4().hex}"
    assert multipass("exec", vm, "--", "touch", marker).returncode == 0
    assert multipass("exec", vm, "--", "test", "-e", marker).returncode == 0
    assert multipass("exec", instance, "--", "test", "-e", marker).returncode == 1
    assert not os.path.exists(marker)


def test_stop_is_synchronous_and_stopped_info_is_static(multipass: MultipassFn, vm: str) -> None:
    assert multipass("stop", vm).returncode == 0
    assert state_of(multipass, vm) == "Stopped"
    assert multipass("stop", vm).returncode == 0  # stopping a stopped instance is a silent success
    entry = json.loads(multipass("info", vm, "--format", "json").stdout)["info"][vm]
    assert entry["ipv4"] == [] and entry["load"] == [] and entry["memory"] == {} and entry["cpu_count"] == ""
    assert entry["disks"] == {"sda1": {}} and entry["release"] == ""
    proc = multipass("transfer", "-", f"{vm}:x", input="x")
    assert (proc.returncode, proc.stderr) == (2, f'transfer failed: instance "{vm}" is not running\n')
    assert multipass("get", f"local.{vm}.cpus").stdout == "2\n"


def test_restart_of_stopped_instance_has_the_1_16_message(multipass: MultipassFn, vm: str) -> None:
    proc = multipass("restart", vm)
    expected = (
        f"restart failed: Instance '{vm}' is already running, but in an unknown state.\n"
        "Try to stop and start it instead.\n"
    )
    assert (proc.returncode, proc.stderr) == (2, expected)


def test_snapshot_and_restore(multipass: MultipassFn, vm: str) -> None:
    proc = multipass("snapshot", vm)
    assert (proc.returncode, proc.stdout) == (0, f"Snapshot taken: {vm}.snapshot1\n")
    proc = multipass("snapshot", vm, "--name", "bad.name")
    assert proc.stderr == 'snapshot failed: Invalid snapshot name: "bad.name".\n'
    proc = multipass("snapshot", vm, "--name", "snapshot1")
    assert proc.stderr == f"snapshot failed: Snapshot already exists: {vm}.snapshot1\n"
    # change the disk after the snapshot; restore must bring the old content back
    assert multipass("exec", vm, "--", "sh", "-c", "echo changed > /home/ubuntu/after").returncode == 0
    assert multipass("stop", vm).returncode == 0
    proc = multipass("restore", f"{vm}.snapshot1")
    assert proc.returncode == 1
    assert proc.stderr.endswith(
        "[error] [client] Caught an unhandled exception: Unable to query client for confirmation. "
        "Use '--destructive' to automatically discard current machine state.\n"
    )
    assert (
        multipass("restore", f"{vm}.nope", "--destructive").stderr == f"restore failed: No such snapshot: {vm}.nope\n"
    )
    proc = multipass("restore", "--destructive", f"{vm}.snapshot1")
    assert (proc.returncode, proc.stdout) == (0, f"Snapshot restored: {vm}.snapshot1\n")
    assert state_of(multipass, vm) == "Stopped"
    assert multipass("exec", vm, "--", "test", "-e", "/home/ubuntu/after").returncode == 1
    listed = json.loads(multipass("list", "--snapshots", "--format", "json").stdout)
    assert listed["info"][vm] == {"snapshot1": {"comment": "", "parent": ""}}
    assert multipass("stop", vm).returncode == 0


def test_exec_auto_starts_a_stopped_instance(multipass: MultipassFn, vm: str) -> None:
    assert state_of(multipass, vm) == "Stopped"
    proc = multipass("exec", vm, "--", "echo", "hi")
    assert (proc.returncode, proc.stdout) == (0, "hi\n")
    assert state_of(multipass, vm) == "Running"
    assert multipass("stop", vm).returncode == 0


def test_clones_are_copy_on_write_with_new_identity(multipass: MultipassFn, vm: str) -> None:
    assert multipass("exec", vm, "--", "sh", "-c", "echo from-source > /home/ubuntu/mark").returncode == 0
    assert multipass("stop", vm).returncode == 0
    proc = multipass("clone", vm)
    assert (proc.returncode, proc.stdout) == (0, f"Cloned from {vm} to {vm}-clone1.\n")
    assert multipass("clone", vm).stdout == f"Cloned from {vm} to {vm}-clone2.\n"
    clone = f"{vm}-clone1"
    assert state_of(multipass, clone) == "Stopped"
    info = json.loads(multipass("info", clone, "--format", "json").stdout)["info"][clone]
    assert info["snapshot_count"] == "0"
    assert multipass("start", clone).returncode == 0
    assert multipass("exec", clone, "--", "cat", "/home/ubuntu/mark").stdout == "from-source\n"
    assert multipass("exec", clone, "--", "cat", "/etc/hostname").stdout == f"{clone}\n"
    assert multipass("exec", clone, "--", "cat", "/var/lib/cloud/data/instance-id").stdout.strip() == clone
    assert multipass("exec", clone, "--", "sh", "-c", "echo clone > /home/ubuntu/mark").returncode == 0
    assert multipass("exec", vm, "--", "cat", "/home/ubuntu/mark").stdout == "from-source\n"
    assert multipass("exec", vm, "--", "cat", "/var/lib/cloud/data/instance-id").stdout.strip() == vm
    ips = {n: json.loads(multipass("info", n, "--format", "json").stdout)["info"][n]["ipv4"][0] for n in (vm, clone)}
    assert ips[vm] != ips[clone]
    assert multipass("stop", vm, clone).returncode == 0


def test_clone_name_errors(multipass: MultipassFn, vm: str) -> None:
    assert multipass("clone", vm, "--name", "1bad").stderr == "clone failed: Invalid destination instance name: 1bad\n"
    proc = multipass("clone", vm, "--name", f"{vm}-clone1")
    assert proc.stderr == f'clone failed: instance "{vm}-clone1" already exists\n'


def test_deleted_names_stay_reserved_until_purge(multipass: MultipassFn, vm: str) -> None:
    clone = f"{vm}-clone2"
    assert multipass("delete", clone).returncode == 0
    assert state_of(multipass, clone) == "Deleted"
    assert multipass("launch", "--name", clone).stderr == f'launch failed: instance "{clone}" already exists\n'
    assert multipass("clone", vm, "--name", clone).stderr == f'clone failed: instance "{clone}" already exists\n'
    proc = multipass("start", clone)
    assert proc.stderr == (
        f"start failed: instance(s) missing\nInstance '{clone}' is deleted. "
        "Use 'recover' to recover it or 'purge' to permanently delete it.\n\n"
    )
    proc = multipass("exec", clone, "--", "true")
    assert proc.stderr == f'exec failed: The following errors occurred:\ninstance "{clone}" is deleted\n'
    assert multipass("recover", clone).returncode == 0
    assert state_of(multipass, clone) == "Stopped"
    assert multipass("delete", clone).returncode == 0
    assert multipass("purge").returncode == 0
    listed = json.loads(multipass("list", "--format", "json").stdout)["list"]
    assert clone not in [e["name"] for e in listed]
    # the per-source counter is not decremented: the next default clone is clone3
    assert multipass("clone", vm).stdout == f"Cloned from {vm} to {vm}-clone3.\n"
    assert multipass("delete", "--purge", f"{vm}-clone3").returncode == 0


def test_trace_and_counted_fault_injection(multipass: MultipassFn, vm: str, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    env = {"MULTIPASS_DOUBLE_TRACE": str(trace), "MULTIPASS_DOUBLE_FAIL": "clone*1,list=daemon"}
    first = multipass("clone", vm, "--name", f"{vm}-copy", env=env)
    assert first.returncode == 2 and first.stderr.startswith("clone failed: ")
    second = multipass("clone", vm, "--name", f"{vm}-copy", env=env)
    assert (second.returncode, second.stdout) == (0, f"Cloned from {vm} to {vm}-copy.\n")
    third = multipass("list", "--format", "json", env=env)
    assert (third.returncode, third.stderr) == (2, "list failed: cannot connect to the multipass socket\n")
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(entry["argv"][1], entry["exit_code"]) for entry in lines] == [("clone", 2), ("clone", 0), ("list", 2)]
    assert all(entry["end"] >= entry["start"] for entry in lines)
    assert lines[0]["argv"] == ["multipass", "clone", vm, "--name", f"{vm}-copy"]


def test_injected_latency_is_a_minimum_duration(multipass: MultipassFn, vm: str, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    env = {"MULTIPASS_DOUBLE_TRACE": str(trace), "MULTIPASS_DOUBLE_LATENCY": "stop=1.5"}
    assert multipass("stop", vm, env=env).returncode == 0
    entry = json.loads(trace.read_text())
    assert entry["end"] - entry["start"] >= 1.5
