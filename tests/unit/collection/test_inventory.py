"""Unit tests of the agentvm.multipass.multipass inventory plugin (subprocess faked)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader
from ansible.template import Templar
from mp_fakes import FakeMultipass, Reply, fixture_text, route_cli_to

from ansible_collections.agentvm.multipass.plugins.inventory import multipass as plugin

# list: bogus-instance (Running), bombastic (Stopped), plus agentvm-* names and a Deleted one
LIST = """{
    "list": [
        {
            "ipv4": [
                "10.21.124.56"
            ],
            "name": "bogus-instance",
            "release": "Ubuntu 16.04 LTS",
            "state": "Running"
        },
        {
            "ipv4": [
            ],
            "name": "bombastic",
            "release": "Ubuntu 18.04 LTS",
            "state": "Stopped"
        },
        {
            "ipv4": [
            ],
            "name": "old-one",
            "release": "Ubuntu 18.04 LTS",
            "state": "Deleted"
        }
    ]
}
"""


@pytest.fixture
def fake(monkeypatch, mp_bin) -> FakeMultipass:
    fake = FakeMultipass()

    def respond(argv):
        if argv[1] == "list":
            return Reply(stdout=LIST)
        if argv[1] == "info":
            return Reply(stdout=fixture_text("info_multiple.json"))
        return Reply(2, stderr="unexpected")

    fake.responder = respond
    route_cli_to(fake, monkeypatch, mp_bin)
    return fake


def write_config(tmp_path: Path, name: str = "multipass.yml", **options) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"plugin": "agentvm.multipass.multipass", **options}))
    return str(path)


def load(path: str) -> InventoryManager:
    return InventoryManager(loader=DataLoader(), sources=[path])


def hostvars(manager: InventoryManager, host: str) -> dict:
    return manager.get_host(host).get_vars()


def parse_directly(path: str) -> InventoryData:
    inventory = InventoryData()
    module = inventory_loader.get("agentvm.multipass.multipass")
    module.parse(inventory, DataLoader(), path, cache=False)
    return inventory


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("multipass.yml", True),
        ("multipass.yaml", True),
        ("dev.multipass.yml", True),
        ("dev.multipass.yaml", True),
        ("multipass.json", False),
        ("notmultipass.yml", False),
        ("inventory.yml", False),
    ],
)
def test_verify_file(tmp_path, name, accepted):
    path = tmp_path / name
    path.write_text("plugin: agentvm.multipass.multipass\n")
    assert inventory_loader.get("agentvm.multipass.multipass").verify_file(str(path)) is accepted


def test_hosts_and_variables(fake, tmp_path, mp_bin):
    manager = load(write_config(tmp_path))
    assert sorted(h.name for h in manager.get_hosts()) == ["bogus-instance", "bombastic"]  # Deleted left out
    running = hostvars(manager, "bogus-instance")
    assert running["ansible_connection"] == "agentvm.multipass.multipass"
    assert running["ansible_host"] == "bogus-instance"
    assert running["multipass_state"] == "Running"
    assert running["multipass_ipv4"] == ["10.21.124.56"]
    assert running["multipass_release"] == "Ubuntu 16.04.3 LTS"
    assert running["multipass_image_hash"] == "1797c5c82016c1e65f4008fcf89deae3a044ef76087a9ec5b907c6d64a3609ac"
    assert running["multipass_image_release"] == "16.04 LTS"
    assert (running["multipass_cpus"], running["multipass_memory"], running["multipass_disk"]) == (
        4,
        1610612736,
        6764573492,
    )
    assert running["multipass_snapshot_count"] == 1
    assert "ansible_python_interpreter" not in running
    stopped = hostvars(manager, "bombastic")
    assert stopped["multipass_state"] == "Stopped"
    assert stopped["multipass_ipv4"] == []
    assert stopped["multipass_release"] == "Ubuntu 18.04 LTS"
    assert stopped["multipass_cpus"] is None
    assert stopped["multipass_snapshot_count"] == 3
    assert fake.argvs == [
        [mp_bin, "list", "--format", "json"],
        [mp_bin, "info", "--format", "json", "--", "bogus-instance", "bombastic"],
    ]


def test_values_from_multipass_are_never_templated(fake, tmp_path):
    evil = LIST.replace("Ubuntu 16.04 LTS", "{{ lookup('pipe', 'id') }}")
    info = fixture_text("info_multiple.json").replace("Ubuntu 16.04.3 LTS", "")
    fake.responder = lambda argv: Reply(stdout=evil if argv[1] == "list" else info)
    manager = load(write_config(tmp_path))
    variables = hostvars(manager, "bogus-instance")
    assert variables["multipass_release"] == "{{ lookup('pipe', 'id') }}"
    templar = Templar(loader=DataLoader(), variables=variables)
    assert templar.template(variables["multipass_release"]) == "{{ lookup('pipe', 'id') }}"


def test_no_runtime_information(fake, tmp_path, mp_bin):
    load(write_config(tmp_path, runtime_information=False))
    assert fake.argvs[1] == [
        mp_bin, "info", "--format", "json", "--no-runtime-information", "--", "bogus-instance", "bombastic",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("options", "hosts"),
    [
        ({"name_prefix": "bo"}, ["bogus-instance", "bombastic"]),
        ({"name_prefix": "bog"}, ["bogus-instance"]),
        ({"name_prefix": "x"}, []),
        ({"name_regex": "tic$"}, ["bombastic"]),
        ({"name_regex": "^b", "states": ["Running"]}, ["bogus-instance"]),
        ({"states": ["stopped"]}, ["bombastic"]),
        ({"states": ["Deleted"]}, ["old-one"]),
        ({"states": ["Running", "Deleted"]}, ["bogus-instance", "old-one"]),
    ],
)
def test_filters(fake, tmp_path, options, hosts):
    def respond(argv):
        if argv[1] == "list":
            return Reply(stdout=LIST)
        text = fixture_text("info_multiple.json").replace('"bombastic"', '"old-one"')
        return Reply(stdout=text if "old-one" in argv else fixture_text("info_multiple.json"))

    fake.responder = respond
    manager = load(write_config(tmp_path, **options))
    assert sorted(h.name for h in manager.get_hosts()) == hosts
    if not hosts:
        assert fake.subcommands() == ["list"]  # nothing selected: no info call


def test_name_prefix_may_be_a_template(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_PREFIX", "bomb")
    path = tmp_path / "multipass.yml"
    path.write_text(
        "plugin: agentvm.multipass.multipass\n"
        "name_prefix: \"{{ lookup('ansible.builtin.env', 'TEST_PREFIX', default='agentvm') }}\"\n"
    )
    assert [h.name for h in load(str(path)).get_hosts()] == ["bombastic"]


def test_repository_inventory_file_uses_the_agentvm_prefix(fake, monkeypatch):
    repo_file = Path(__file__).resolve().parents[3] / "inventory" / "multipass.yml"
    monkeypatch.delenv("AGENTVM_PREFIX", raising=False)
    listed = LIST.replace('"bombastic"', '"agentvm-golden"')
    fake.responder = lambda argv: Reply(
        stdout=listed
        if argv[1] == "list"
        else fixture_text("info_multiple.json").replace("bombastic", "agentvm-golden")
    )
    manager = load(str(repo_file))
    assert [h.name for h in manager.get_hosts()] == ["agentvm-golden"]
    assert [g for g in manager.groups if g.startswith("state_")] == ["state_stopped"]
    monkeypatch.setenv("AGENTVM_PREFIX", "bogus")
    assert [h.name for h in load(str(repo_file)).get_hosts()] == ["bogus-instance"]  # prefix "bogus-"


def test_constructed_features(fake, tmp_path):
    manager = load(
        write_config(
            tmp_path,
            compose={"ansible_multipass_allow_start": "multipass_state == 'Stopped'", "cores": "multipass_cpus"},
            groups={"has_snapshots": "multipass_snapshot_count > 2"},
            keyed_groups=[{"key": "multipass_state | lower", "prefix": "state"}],
        )
    )
    assert sorted(manager.groups["state_running"].hosts, key=str)[0].name == "bogus-instance"
    assert [h.name for h in manager.groups["state_stopped"].hosts] == ["bombastic"]
    assert [h.name for h in manager.groups["has_snapshots"].hosts] == ["bombastic"]
    assert hostvars(manager, "bombastic")["ansible_multipass_allow_start"] is True
    assert hostvars(manager, "bogus-instance")["cores"] == 4


def test_strict_makes_bad_expressions_fatal(fake, tmp_path):
    path = write_config(tmp_path, strict=True, compose={"x": "undefined_variable + 1"})
    with pytest.raises(AnsibleError, match="Could not set x for host"):
        parse_directly(path)
    path = write_config(tmp_path, name="lax.multipass.yml", strict=False, compose={"x": "undefined_variable + 1"})
    assert "bombastic" in parse_directly(path).hosts


def test_compose_can_override_the_connection(fake, tmp_path):
    manager = load(write_config(tmp_path, compose={"ansible_connection": "'ansible.builtin.local'"}))
    assert hostvars(manager, "bombastic")["ansible_connection"] == "ansible.builtin.local"


def test_ssh_mode(fake, tmp_path):
    manager = load(
        write_config(
            tmp_path,
            connection="ssh",
            ssh_private_key_file="/keys/id",
            ssh_common_args="-o StrictHostKeyChecking=no",
        )
    )
    running = hostvars(manager, "bogus-instance")
    assert running["ansible_connection"] == "ansible.builtin.ssh"
    assert running["ansible_host"] == "10.21.124.56"
    assert running["ansible_user"] == "ubuntu"
    assert running["ansible_ssh_private_key_file"] == "/keys/id"
    assert running["ansible_ssh_common_args"] == "-o StrictHostKeyChecking=no"


def test_connection_none_sets_nothing(fake, tmp_path):
    manager = load(write_config(tmp_path, connection="none"))
    assert "ansible_connection" not in hostvars(manager, "bombastic")


def test_cache_serves_the_second_parse(fake, tmp_path):
    path = write_config(
        tmp_path, cache=True, cache_plugin="ansible.builtin.jsonfile", cache_connection=str(tmp_path / "c")
    )
    module = inventory_loader.get("agentvm.multipass.multipass")
    module.parse(InventoryData(), DataLoader(), path, cache=False)  # refresh: query and store
    module.update_cache_if_changed()
    calls = len(fake.calls)
    inventory = InventoryData()
    module = inventory_loader.get("agentvm.multipass.multipass")
    module.parse(inventory, DataLoader(), path, cache=True)
    assert len(fake.calls) == calls
    assert sorted(inventory.hosts) == ["bogus-instance", "bombastic"]


def test_cache_is_off_by_default(fake, tmp_path):
    path = write_config(tmp_path)
    load(path)
    load(path)
    assert fake.subcommands() == ["list", "info", "list", "info"]


def test_missing_multipass_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MULTIPASS_BIN", str(tmp_path / "nope"))
    with pytest.raises(AnsibleParserError, match=r"multipass executable .* does not exist"):
        parse_directly(write_config(tmp_path))
    monkeypatch.delenv("MULTIPASS_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AnsibleParserError, match="was not found on PATH"):
        parse_directly(write_config(tmp_path))


@pytest.mark.parametrize(
    "stderr",
    [
        "list failed: cannot connect to the multipass socket\n",
        "list failed: multipass socket access denied\n",
        "list failed: The client is not authenticated with the Multipass service.\n"
        "Please use 'multipass authenticate' before proceeding.\n",
    ],
)
def test_unreachable_daemon_is_a_clear_error(fake, tmp_path, stderr):
    fake.responder = lambda argv: Reply(2, stderr=stderr)
    with pytest.raises(AnsibleParserError, match="Multipass daemon cannot be reached: " + stderr.splitlines()[0]):
        parse_directly(write_config(tmp_path, retries=1))


def test_instance_deleted_between_list_and_info(fake, tmp_path):
    def respond(argv):
        if argv[1] == "list":
            return Reply(stdout=LIST)
        if "bombastic" in argv:
            return Reply(2, stderr='info failed: The following errors occurred:\ninstance "bombastic" does not exist\n')
        return Reply(stdout=fixture_text("info_multiple.json").replace('"bombastic"', '"other"'))

    fake.responder = respond
    assert sorted(parse_directly(write_config(tmp_path)).hosts) == ["bogus-instance"]


def test_unknown_state_filter_is_rejected(fake, tmp_path):
    with pytest.raises(AnsibleParserError, match="unknown state"):
        parse_directly(write_config(tmp_path, states=["Runing"]))


def test_docs_are_valid():
    assert yaml.safe_load(plugin.DOCUMENTATION)
    examples = list(yaml.safe_load_all(plugin.EXAMPLES))
    assert len(examples) == 4
    assert all(example["plugin"] == "agentvm.multipass.multipass" for example in examples)
