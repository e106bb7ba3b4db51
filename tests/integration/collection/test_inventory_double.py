"""The inventory plugin (and the repository's inventory/multipass.yml) against the Multipass double."""

from __future__ import annotations

import json
import uuid

import pytest
from it_helpers import output

pytestmark = pytest.mark.double


def load_inventory_json(text: str):
    """ansible-inventory's JSON; ansible-core 2.19 writes untrusted (unsafe) strings as {"__ansible_unsafe": s}."""

    def unwrap(obj: dict):
        return obj["__ansible_unsafe"] if set(obj) == {"__ansible_unsafe"} else obj

    return json.loads(text, object_hook=unwrap)


@pytest.fixture
def prefix() -> str:
    return f"inv{uuid.uuid4().hex[:5]}"


def test_graph_of_the_repository_inventory(ansible, own_instance, prefix):
    running = own_instance(prefix=f"{prefix}-run")
    stopped = own_instance(prefix=f"{prefix}-gold", stopped=True)
    other = own_instance(prefix="elsewhere")
    env = {"AGENTVM_PREFIX": prefix}

    graph = ansible("ansible-inventory", "-i", "inventory/", "--graph", env=env)
    assert graph.returncode == 0, output(graph)
    assert "[WARNING]" not in graph.stderr, graph.stderr
    lines = [line.strip(" |-") for line in graph.stdout.splitlines()]
    assert lines.index("@state_running:") < lines.index(running)
    assert lines.index("@state_stopped:") < lines.index(stopped)
    assert other not in lines

    listing = ansible("ansible-inventory", "-i", "inventory/", "--list", env=env)
    assert listing.returncode == 0, output(listing)
    assert '"__ansible_unsafe"' in listing.stdout  # values from Multipass stay marked unsafe
    hostvars = load_inventory_json(listing.stdout)["_meta"]["hostvars"]
    assert sorted(hostvars) == sorted([running, stopped])
    assert hostvars[running]["ansible_connection"] == "agentvm.multipass.multipass"
    assert hostvars[running]["ansible_host"] == running
    assert hostvars[running]["multipass_state"] == "Running"
    assert len(hostvars[running]["multipass_ipv4"]) >= 1
    assert hostvars[stopped]["multipass_state"] == "Stopped"
    assert hostvars[stopped]["multipass_ipv4"] == []
    assert len(hostvars[stopped]["multipass_image_hash"]) == 64
    assert hostvars[stopped]["multipass_snapshot_count"] == 0


def test_runtime_variables_and_ping_through_the_inventory(ansible, own_instance, prefix, tmp_path):
    name = own_instance(prefix=prefix)
    config = tmp_path / "it.multipass.yml"
    config.write_text(
        "plugin: agentvm.multipass.multipass\n"
        f"name_prefix: {prefix}-\n"
        "states: [Running]\n"
        "compose:\n  ansible_python_interpreter: \"'/usr/bin/python3'\"\n"
        "groups:\n  small: multipass_cpus == 1\n"
    )
    host = ansible("ansible-inventory", "-i", str(config), "--host", name)
    assert host.returncode == 0, output(host)
    variables = load_inventory_json(host.stdout)
    assert variables["multipass_cpus"] == 1
    assert variables["multipass_memory"] > 0
    assert variables["multipass_disk"] > 0
    ping = ansible("ansible", "small", "-i", str(config), "-m", "ansible.builtin.ping")
    assert ping.returncode == 0, output(ping)
    assert f"{name} | SUCCESS" in ping.stdout


def test_missing_multipass_is_a_clear_error(ansible, tmp_path):
    config = tmp_path / "multipass.yml"
    config.write_text("plugin: agentvm.multipass.multipass\n")
    proc = ansible(
        "ansible-inventory", "-i", str(config), "--graph",
        env={"MULTIPASS_BIN": str(tmp_path / "no-multipass"), "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"},
    )  # fmt: skip
    assert proc.returncode != 0
    assert "does not exist or is not executable" in proc.stderr


def test_unreachable_daemon_is_a_clear_error(ansible, tmp_path):
    config = tmp_path / "multipass.yml"
    config.write_text("plugin: agentvm.multipass.multipass\nretries: 0\n")
    proc = ansible(
        "ansible-inventory", "-i", str(config), "--graph",
        env={"MULTIPASS_DOUBLE_FAIL": "list=daemon", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"},
    )  # fmt: skip
    assert proc.returncode != 0
    assert "the Multipass daemon cannot be reached: list failed: cannot connect to the multipass socket" in proc.stderr
