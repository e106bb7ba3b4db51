"""The agentvm.multipass.instance and instance_info modules against the Multipass double."""

from __future__ import annotations

import uuid

import pytest
from it_helpers import PLAYBOOKS, output

pytestmark = pytest.mark.double

MUTATING = {
    "launch",
    "clone",
    "start",
    "stop",
    "restart",
    "suspend",
    "delete",
    "purge",
    "recover",
    "snapshot",
    "restore",
}


@pytest.fixture
def vm(multipass):
    """A fresh name; whatever the test created under it (name, name-*) is purged afterwards."""
    name = f"mod-{uuid.uuid4().hex[:6]}"
    yield name
    for suffix in ("", "-copy", "-clone", "-new"):
        multipass("delete", "--purge", name + suffix)


def play(ansible, vm: str, step: str, env: dict[str, str] | None = None):
    return ansible(
        "ansible-playbook", "-e", f"vm={vm}", "-e", f"step={step}", str(PLAYBOOKS / "instance_module.yml"), env=env
    )


def test_launch_then_second_run_is_unchanged(ansible, vm, multipass, instance_state):
    proc = play(ansible, vm, "launch")
    assert proc.returncode == 0, output(proc)
    assert instance_state(vm) == "Running"
    # the cloud-init content given as a dictionary reached the instance
    seen = multipass("exec", vm, "--", "cat", "/etc/agentvm-it")
    assert seen.stdout == "from cloud-init\n", seen.stderr


def test_clone_of_running_source_fails_with_multipass_message(ansible, vm, multipass, instance_state):
    assert multipass("launch", "--name", vm).returncode == 0
    proc = play(ansible, vm, "clone_running")
    assert proc.returncode == 2, output(proc)
    assert "clone failed: Multipass can only clone stopped instances." in proc.stdout
    assert instance_state(vm) == "Running"  # not stopped behind the user's back
    assert instance_state(f"{vm}-clone") is None


def test_lifecycle_and_absent_twice(ansible, vm, multipass, instance_state):
    assert multipass("launch", "--name", vm).returncode == 0
    proc = play(ansible, vm, "lifecycle")
    assert proc.returncode == 0, output(proc)
    assert instance_state(vm) == "Stopped"
    assert instance_state(f"{vm}-copy") is None


def test_check_mode_makes_no_mutating_call(ansible, vm, multipass, instance_state, trace):
    assert multipass("launch", "--name", vm).returncode == 0
    proc = play(ansible, vm, "check_mode", env=trace.env)
    assert proc.returncode == 0, output(proc)
    commands = trace.commands()
    assert commands, "the double wrote no trace"
    assert not MUTATING & set(commands), commands
    assert instance_state(vm) == "Running"
    assert instance_state(f"{vm}-new") is None
