"""Unit tests of the agentvm.multipass.instance and instance_info modules (subprocess faked)."""

from __future__ import annotations

import json

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args
from mp_fakes import FakeMultipass, Reply, fixture_text, route_cli_to

from ansible_collections.agentvm.multipass.plugins.modules import instance, instance_info

MUTATING = {"launch", "clone", "start", "stop", "delete", "purge", "restart", "suspend", "recover"}

# --------------------------------------------------------------------------------------------------
# Planning (pure)
# --------------------------------------------------------------------------------------------------

PLANS = [
    # state, current, source_state, purge -> steps
    ("present", None, None, True, ["launch"]),
    ("present", "Running", None, True, []),
    ("present", "Stopped", None, True, []),
    ("present", "Suspended", None, True, []),
    ("started", None, None, True, ["launch"]),
    ("started", "Running", None, True, []),
    ("started", "Stopped", None, True, ["start"]),
    ("started", "Suspended", None, True, ["start"]),
    ("started", "Delayed Shutdown", None, True, ["start"]),
    ("started", "Unknown", None, True, ["start"]),
    ("stopped", None, None, True, ["launch", "stop"]),
    ("stopped", "Running", None, True, ["stop"]),
    ("stopped", "Stopped", None, True, []),
    ("stopped", "Suspended", None, True, ["stop"]),
    ("absent", None, None, True, []),
    ("absent", "Running", None, True, ["delete"]),
    ("absent", "Stopped", None, False, ["delete"]),
    ("absent", "Deleted", None, True, ["delete"]),
    ("absent", "Deleted", None, False, []),
    ("cloned", None, "Stopped", True, ["clone"]),
    ("cloned", None, "Running", True, ["stop_source", "clone"]),
    ("cloned", None, "Suspended", True, ["stop_source", "clone"]),
    ("cloned", "Stopped", "Running", True, []),
    ("cloned", "Running", None, True, []),
]


@pytest.mark.parametrize(("state", "current", "source", "purge", "steps"), PLANS)
def test_plan(state, current, source, purge, steps):
    assert instance.plan(state, current, source, purge) == steps


@pytest.mark.parametrize(
    ("state", "current", "source", "message"),
    [
        ("present", "Deleted", None, "is deleted but not purged"),
        ("started", "Deleted", None, "is deleted but not purged"),
        ("cloned", "Deleted", "Stopped", "is deleted but not purged"),
        ("cloned", None, None, "the source instance does not exist"),
    ],
)
def test_plan_refusals(state, current, source, message):
    with pytest.raises(instance.PlanError, match=message):
        instance.plan(state, current, source)


def test_cloud_init_dict_becomes_yaml_compatible_text():
    text = instance.cloud_init_text({"packages": ["jq"], "runcmd": [["touch", "/x"]]})
    assert yaml.safe_load(text) == {"packages": ["jq"], "runcmd": [["touch", "/x"]]}
    assert instance.cloud_init_text("#cloud-config\n{}\n") == "#cloud-config\n{}\n"
    assert instance.cloud_init_text(None) is None


# --------------------------------------------------------------------------------------------------
# Running the modules against a scripted multipass
# --------------------------------------------------------------------------------------------------


class World:
    """A tiny model of Multipass: instance states, and replies in the reference's formats."""

    def __init__(self, **states: str) -> None:
        self.states = dict(states)

    def info(self, names: list[str]) -> Reply:
        missing = [n for n in names if n not in self.states]
        if missing:
            lines = "".join(f'instance "{n}" does not exist\n' for n in missing)
            return Reply(2, stderr=f"info failed: The following errors occurred:\n{lines}")
        template = json.loads(fixture_text("info_multiple.json"))["info"]["bombastic"]
        entries = {n: {**template, "state": self.states[n]} for n in names}
        return Reply(stdout=json.dumps({"errors": [], "info": entries}, indent=4, sort_keys=True) + "\n")

    def respond(self, argv: list[str]) -> Reply:
        command, args = argv[1], argv[2:]
        name = args[-1]
        if command == "info":
            return self.info(args[args.index("--") + 1 :])
        if command == "list":
            entries = [
                {"ipv4": [], "name": n, "release": "Ubuntu 24.04 LTS", "state": s} for n, s in self.states.items()
            ]
            return Reply(stdout=json.dumps({"list": entries}, indent=4, sort_keys=True) + "\n")
        if command == "launch":
            name = args[args.index("--name") + 1]
            if name in self.states:
                return Reply(2, stderr=f'launch failed: instance "{name}" already exists\n')
            self.states[name] = "Running"
            return Reply(stdout=f"Launched: {name}\n")
        if command == "clone":
            dest = args[args.index("--name") + 1]
            if self.states.get(name) != "Stopped":
                return Reply(2, stderr="clone failed: Multipass can only clone stopped instances.\n")
            self.states[dest] = "Stopped"
            return Reply(stdout=f"Cloned from {name} to {dest}.\n")
        if command == "start":
            self.states[name] = "Running"
            return Reply()
        if command == "stop":
            self.states[name] = "Stopped"
            return Reply()
        if command == "delete":
            if "--purge" in args:
                self.states.pop(name, None)
            else:
                self.states[name] = "Deleted"
            return Reply()
        return Reply(1, stderr=f"unexpected {argv}")


@pytest.fixture
def world(monkeypatch, mp_bin):
    world = World()
    fake = FakeMultipass(responder=world.respond)
    route_cli_to(fake, monkeypatch, mp_bin)
    world.fake = fake
    return world


def run_module(module, capsys, **args) -> dict:
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


def mutating(world) -> list[list[str]]:
    return [argv[1:] for argv in world.fake.argvs if argv[1] in MUTATING]


def test_launch_then_unchanged(world, capsys, mp_bin):
    first = run_module(
        instance, capsys, name="vm", image="24.04", cpus=2, memory="2G", disk="10G", cloud_init={"packages": ["jq"]}
    )
    assert first["changed"] is True
    assert first["actions"] == ["launch vm"]
    assert first["instance"]["name"] == "vm"
    assert first["instance"]["state"] == "Running"
    launch = next(c for c in world.fake.calls if c.argv[1] == "launch")
    assert launch.argv == [
        mp_bin, "launch", "--name", "vm", "--cpus", "2", "--memory", "2G", "--disk", "10G",
        "--timeout", "600", "--cloud-init", "-", "--", "24.04",
    ]  # fmt: skip
    assert yaml.safe_load(launch.input) == {"packages": ["jq"]}
    second = run_module(instance, capsys, name="vm", image="24.04")
    assert second["changed"] is False
    assert second["actions"] == []
    assert len(mutating(world)) == 1


@pytest.mark.parametrize(
    ("state", "start", "params", "calls"),
    [
        ("present", {}, {}, [["launch", "--name", "vm", "--timeout", "600"]]),
        ("started", {"vm": "Stopped"}, {}, [["start", "--timeout", "600", "--", "vm"]]),
        ("stopped", {"vm": "Running"}, {"force": True}, [["stop", "--force", "--", "vm"]]),
        ("absent", {"vm": "Running"}, {}, [["delete", "--purge", "--", "vm"]]),
        ("absent", {"vm": "Running"}, {"purge": False}, [["delete", "--", "vm"]]),
        ("cloned", {"gold": "Stopped"}, {"source": "gold"}, [["clone", "--name", "vm", "--", "gold"]]),
        (
            "cloned",
            {"gold": "Running"},
            {"source": "gold", "stop_source": True},
            [["stop", "--", "gold"], ["clone", "--name", "vm", "--", "gold"]],
        ),
    ],
)
def test_each_state_runs_the_right_commands(world, capsys, state, start, params, calls):
    world.states.update(start)
    result = run_module(instance, capsys, name="vm", state=state, **params)
    assert result["changed"] is True
    assert mutating(world) == calls
    world.fake.calls.clear()
    again = run_module(instance, capsys, name="vm", state=state, **params)
    assert again["changed"] is False
    assert mutating(world) == []


@pytest.mark.parametrize(
    ("state", "start", "params"),
    [
        ("present", {}, {}),
        ("started", {"vm": "Stopped"}, {}),
        ("stopped", {"vm": "Running"}, {}),
        ("absent", {"vm": "Running"}, {}),
        ("cloned", {"gold": "Stopped"}, {"source": "gold"}),
    ],
)
def test_check_mode_changes_nothing(world, capsys, state, start, params):
    world.states.update(start)
    before = dict(world.states)
    result = run_module(instance, capsys, name="vm", state=state, _ansible_check_mode=True, **params)
    assert result["changed"] is True
    assert result["actions"]
    assert mutating(world) == []
    assert world.states == before
    assert set(world.fake.subcommands()) == {"info"}


def test_diff(world, capsys):
    world.states["vm"] = "Running"
    result = run_module(instance, capsys, name="vm", state="stopped", _ansible_diff=True)
    assert result["diff"] == {"before": {"state": "Running"}, "after": {"state": "Stopped"}}


def test_clone_of_a_running_source_fails_with_multipass_message(world, capsys):
    world.states["gold"] = "Running"
    result = run_module(instance, capsys, name="vm", state="cloned", source="gold")
    assert result["failed"] is True
    assert result["msg"] == "clone failed: Multipass can only clone stopped instances."
    assert result["rc"] == 2
    assert world.states == {"gold": "Running"}  # the source was not stopped


def test_clone_of_a_running_source_in_check_mode_predicts_the_failure(world, capsys):
    world.states["gold"] = "Running"
    result = run_module(instance, capsys, name="vm", state="cloned", source="gold", _ansible_check_mode=True)
    assert result["failed"] is True
    assert "can only clone stopped instances" in result["msg"]
    assert mutating(world) == []


def test_clone_of_a_missing_source(world, capsys):
    result = run_module(instance, capsys, name="vm", state="cloned", source="gold")
    assert result["failed"] is True
    assert result["msg"] == 'instance "gold" cannot be cloned: the source instance does not exist'


def test_absent_twice(world, capsys):
    world.states["vm"] = "Stopped"
    assert run_module(instance, capsys, name="vm", state="absent")["changed"] is True
    second = run_module(instance, capsys, name="vm", state="absent")
    assert second["changed"] is False
    assert second["instance"] == {}


def test_deleted_instance_blocks_present(world, capsys):
    world.states["vm"] = "Deleted"
    result = run_module(instance, capsys, name="vm", state="started")
    assert result["failed"] is True
    assert "is deleted but not purged" in result["msg"]


def test_launch_failure_carries_multipass_message(world, capsys):
    world.respond_original = world.respond
    world.fake.responder = lambda argv: (
        Reply(2, stderr='launch failed: Unable to find an image matching "nope" in remote "".\n')
        if argv[1] == "launch"
        else world.respond_original(argv)
    )
    result = run_module(instance, capsys, name="vm", image="nope")
    assert result["failed"] is True
    assert result["msg"] == 'launch failed: Unable to find an image matching "nope" in remote "".'
    assert result["actions"] == ["launch vm"]


@pytest.mark.parametrize("name", ["1vm", "vm-", "v_m", "a.b", ""])
def test_invalid_names_are_rejected_before_calling_multipass(world, capsys, name):
    result = run_module(instance, capsys, name=name)
    assert result["failed"] is True
    assert "Invalid instance name" in result["msg"]
    assert world.fake.calls == []


def test_instance_info(world, capsys):
    world.states.update({"a": "Running", "b": "Stopped"})
    result = run_module(instance_info, capsys, name=["b", "ghost"])
    assert result["changed"] is False
    assert list(result["instances"]) == ["b"]
    assert result["instances"]["b"]["state"] == "Stopped"
    assert result["missing"] == ["ghost"]
    everything = run_module(instance_info, capsys)
    assert sorted(everything["instances"]) == ["a", "b"]
    assert mutating(world) == []


def test_module_docs_are_valid():
    for module in (instance, instance_info):
        assert yaml.safe_load(module.DOCUMENTATION)
        assert yaml.safe_load(module.EXAMPLES)
        assert yaml.safe_load(module.RETURN)
