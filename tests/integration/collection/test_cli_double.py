"""``MultipassCLI`` as a plain Python API (no Ansible) against the Multipass double."""

from __future__ import annotations

import uuid

import pytest

from ansible_collections.agentvm.multipass.plugins.module_utils import multipass as mp

pytestmark = pytest.mark.double


@pytest.fixture
def cli(double_env) -> mp.MultipassCLI:
    return mp.MultipassCLI(environ=double_env, retry=mp.RetryPolicy(retries=0))


def test_queries(cli, instance):
    assert cli.exists(instance) is True
    assert cli.exists(f"ghost-{uuid.uuid4().hex[:6]}") is False
    assert instance in {entry["name"] for entry in cli.list_instances()}
    assert cli.state(instance) == "Running"
    assert cli.version()["multipass"] == "1.16.3"


def test_snapshots_lifecycle(cli, own_instance):
    vm = own_instance(stopped=True)
    assert cli.snapshots(vm) == {}
    assert cli.snapshot(vm) == "snapshot1"  # Multipass's own name, read from its output
    assert cli.snapshot(vm, "sealed", "a 'comment' with\nnewline") == "sealed"
    with pytest.raises(mp.AlreadyExistsError, match=f"Snapshot already exists: {vm}.sealed"):
        cli.snapshot(vm, "sealed")
    found = cli.snapshots(vm)
    assert sorted(found) == ["sealed", "snapshot1"]
    assert found["sealed"]["comment"] == "a 'comment' with\nnewline"
    assert found["sealed"]["parent"] == "snapshot1"
    assert found["snapshot1"]["children"] == ["sealed"]
    assert cli.all_snapshots()[vm]["sealed"]["parent"] == "snapshot1"
    cli.restore(vm, "snapshot1")
    with pytest.raises(mp.SnapshotNotFoundError):
        cli.restore(vm, "nope")
    assert cli.delete_snapshot(vm, "snapshot1") is True
    assert cli.delete_snapshot(vm, "snapshot1", missing_ok=True) is False
    with pytest.raises(mp.SnapshotNotFoundError):
        cli.delete_snapshot(vm, "snapshot1")
    assert list(cli.snapshots(vm)) == ["sealed"]
    assert cli.snapshots(vm)["sealed"]["parent"] is None  # re-parented by Multipass


def test_snapshot_of_a_running_instance_is_a_state_error(cli, own_instance):
    vm = own_instance()
    with pytest.raises(mp.InstanceStateError, match="can only take snapshots of stopped instances"):
        cli.snapshot(vm, "s1")
    assert cli.snapshots(vm) == {}


def test_delete_missing_ok(cli, own_instance):
    vm = own_instance(stopped=True)
    assert cli.delete(vm, purge=True, missing_ok=True) is True
    assert cli.exists(vm) is False
    assert cli.delete(vm, purge=True, missing_ok=True) is False
    with pytest.raises(mp.InstanceNotFoundError):
        cli.delete(vm, purge=True)
    with pytest.raises(mp.InstanceNotFoundError):
        cli.snapshots(vm)
