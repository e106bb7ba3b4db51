"""The agentvm.multipass.snapshot module (and instance_info's snapshots) against the Multipass double.

What Multipass stored is read back with the double's own CLI, never through the module under test.
"""

from __future__ import annotations

import json

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

# Shell and option syntax that must reach Multipass as one untouched argument (no Jinja braces: extra vars
# are trusted and would be templated by Ansible itself before the module sees them).
COMMENT = json.dumps(
    {
        "build_id": "20261121t221500-3f9c",
        "shell": "$(id) `id` $HOME ; rm -rf / | cat",
        "dash": "--help -x",
        "nl": "a\nb",
    },
    sort_keys=True,
)


def play(ansible, vm: str, step: str, env: dict[str, str] | None = None, comment: str = ""):
    extra = json.dumps({"vm": vm, "step": step, "comment": comment})
    return ansible("ansible-playbook", "-e", extra, str(PLAYBOOKS / "snapshot_module.yml"), env=env)


def snapshots(multipass, vm: str) -> dict:
    proc = multipass("info", "--snapshots", "--format", "json", vm)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["info"].get(vm, {}).get("snapshots", {})


def test_create_idempotent_check_mode_restore_and_absent(ansible, own_instance, multipass, instance_state, trace):
    vm = own_instance()
    assert multipass("exec", vm, "--", "sh", "-c", "echo before > /home/ubuntu/marker").returncode == 0
    assert multipass("stop", vm).returncode == 0

    proc = play(ansible, vm, "present", comment=COMMENT)
    assert proc.returncode == 0, output(proc)
    stored = snapshots(multipass, vm)
    assert list(stored) == ["sealed"]
    assert stored["sealed"]["comment"] == COMMENT  # byte for byte, as one argument
    assert stored["sealed"]["parent"] == ""

    proc = play(ansible, vm, "check_mode", env=trace.env)
    assert proc.returncode == 0, output(proc)
    commands = trace.commands()
    assert commands, "the double wrote no trace"
    assert not MUTATING & set(commands), commands
    assert list(snapshots(multipass, vm)) == ["sealed"]

    # Change the disk after the snapshot, then restore it: the change is gone.
    assert multipass("exec", vm, "--", "sh", "-c", "echo after > /home/ubuntu/marker").returncode == 0
    assert multipass("stop", vm).returncode == 0
    proc = play(ansible, vm, "restored")
    assert proc.returncode == 0, output(proc)
    assert instance_state(vm) == "Stopped"
    seen = multipass("exec", vm, "--", "cat", "/home/ubuntu/marker")
    assert seen.stdout == "before\n", seen.stderr
    assert multipass("stop", vm).returncode == 0

    proc = play(ansible, vm, "absent")
    assert proc.returncode == 0, output(proc)
    assert snapshots(multipass, vm) == {}


def test_snapshot_of_a_running_instance_fails_with_multipass_message(ansible, own_instance, multipass, instance_state):
    vm = own_instance()
    proc = play(ansible, vm, "running")
    assert proc.returncode == 2, output(proc)
    assert "snapshot failed: Multipass can only take snapshots of stopped instances." in proc.stdout
    assert instance_state(vm) == "Running"  # not stopped behind the user's back
    assert snapshots(multipass, vm) == {}


def test_restore_onto_a_running_instance_fails_with_multipass_message(ansible, own_instance, multipass, instance_state):
    vm = own_instance(stopped=True)
    assert multipass("snapshot", "--name", "sealed", vm).returncode == 0
    assert multipass("start", vm).returncode == 0
    proc = play(ansible, vm, "restore_running")
    assert proc.returncode == 2, output(proc)
    assert "restore failed: Multipass can only restore snapshots of stopped instances." in proc.stdout
    assert instance_state(vm) == "Running"
