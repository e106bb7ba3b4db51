"""Unit tests of the agentvm.multipass.snapshot module and of instance_info's ``snapshots`` option (subprocess faked).

``World`` answers like Multipass 1.16.3: ``info``/``info --snapshots`` documents in the formatter's shapes, the
§2.9 rules (snapshot and restore need a Stopped instance; restore checks the snapshot before the state;
duplicates refused) and their exact stderr texts.
"""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args
from mp_fakes import FakeMultipass, Reply, fixture_text, route_cli_to

from ansible_collections.agentvm.multipass.plugins.modules import instance_info, snapshot

MUTATING = {
    "launch",
    "clone",
    "start",
    "stop",
    "delete",
    "purge",
    "restart",
    "suspend",
    "recover",
    "snapshot",
    "restore",
}

# --------------------------------------------------------------------------------------------------
# Planning and check-mode predictions (pure)
# --------------------------------------------------------------------------------------------------

PLANS = [
    # state, snapshot exists -> steps
    ("present", False, ["snapshot"]),
    ("present", True, []),
    ("absent", True, ["delete"]),
    ("absent", False, []),
    ("restored", True, ["restore"]),
    ("restored", False, ["restore"]),  # Multipass refuses it with its own message
]


@pytest.mark.parametrize(("state", "exists", "steps"), PLANS)
def test_plan(state, exists, steps):
    assert snapshot.plan(state, exists) == steps


PREDICTIONS = [
    # step, instance state, snapshot exists -> predicted failure (None: Multipass would accept it)
    ("snapshot", "Stopped", False, None),
    (
        "snapshot",
        "Running",
        False,
        'snapshot would fail: the instance "vm" is Running and Multipass can only take snapshots of stopped instances',
    ),
    (
        "snapshot",
        "Suspended",
        False,
        'snapshot would fail: the instance "vm" is Suspended and Multipass can only take snapshots of stopped instances',
    ),
    ("restore", "Stopped", True, None),
    ("restore", "Stopped", False, "restore would fail: No such snapshot: vm.s1"),
    ("restore", "Running", False, "restore would fail: No such snapshot: vm.s1"),  # checked before the state
    (
        "restore",
        "Running",
        True,
        'restore would fail: the instance "vm" is Running and Multipass can only restore snapshots of stopped instances',
    ),
    ("delete", "Running", True, None),  # deleting a snapshot needs no particular state
    ("delete", "Deleted", True, "delete would fail: Cannot delete snapshots of deleted instances: vm.s1"),
]


@pytest.mark.parametrize(("step", "state", "exists", "message"), PREDICTIONS)
def test_predicted_failure(step, state, exists, message):
    assert snapshot.predicted_failure(step, "vm", "s1", state, exists) == message


# --------------------------------------------------------------------------------------------------
# A scripted Multipass with snapshots
# --------------------------------------------------------------------------------------------------


def _document(info: dict) -> Reply:
    return Reply(stdout=json.dumps({"errors": [], "info": info}, indent=4, sort_keys=True) + "\n")


def _missing(command: str, names: list[str]) -> Reply:
    lines = "".join(f'instance "{n}" does not exist\n' for n in names)
    return Reply(2, stderr=f"{command} failed: The following errors occurred:\n{lines}")


class World:
    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.snaps: dict[str, dict[str, dict]] = {}
        self.taken: dict[str, int] = {}
        self.current: dict[str, str] = {}
        self.restored: list[str] = []

    def add(self, name: str, state: str = "Stopped", **snaps: str) -> None:
        self.states[name] = state
        self.snaps[name] = {}
        for snap, comment in snaps.items():
            self._take(name, snap, comment)

    def _take(self, name: str, snap: str, comment: str) -> None:
        """A new snapshot's parent is the latest one taken (or restored), as in Multipass."""
        self.snaps[name][snap] = {"comment": comment, "parent": self.current.get(name, "")}
        self.current[name] = snap
        self.taken[name] = self.taken.get(name, 0) + 1

    def detail(self, name: str, snap: str) -> dict:
        data = self.snaps[name][snap]
        return {
            "children": sorted(n for n, s in self.snaps[name].items() if s["parent"] == snap),
            "comment": data["comment"],
            "cpu_count": "2",
            "created": "Sat Nov 21 22:15:00 2026 UTC",
            "disk_space": "5.0GiB",
            "memory_size": "1.0GiB",
            "mounts": {},
            "parent": data["parent"],
            "size": "",
        }

    def info(self, args: list[str]) -> Reply:
        names = args[args.index("--") + 1 :] if "--" in args else sorted(self.states)
        missing = [n for n in names if n not in self.states]
        if missing:
            return _missing("info", missing)
        if "--snapshots" in args:  # §3.4: only "snapshots", and only for instances that have some
            return _document(
                {n: {"snapshots": {s: self.detail(n, s) for s in self.snaps[n]}} for n in names if self.snaps[n]}
            )
        template = json.loads(fixture_text("info_multiple.json"))["info"]["bombastic"]
        return _document(
            {n: {**template, "state": self.states[n], "snapshot_count": str(len(self.snaps[n]))} for n in names}
        )

    def respond(self, argv: list[str]) -> Reply:
        command, args = argv[1], argv[2:]
        target = args[-1]
        if command == "info":
            return self.info(args)
        if command == "list":
            entries = [
                {"ipv4": [], "name": n, "release": "Ubuntu 24.04 LTS", "state": s} for n, s in self.states.items()
            ]
            return Reply(stdout=json.dumps({"list": entries}, indent=4, sort_keys=True) + "\n")
        if command == "snapshot":
            return self.snapshot(target, args)
        if command == "restore":
            return self.restore(target, args)
        if command == "delete" and "." in target:
            name, _, snap = target.partition(".")
            if "--purge" not in args:
                return Reply(1, stderr="Snapshots can only be purged\n")
            if name not in self.states:
                return _missing("delete", [name])
            if snap not in self.snaps[name]:
                return Reply(2, stderr=f"delete failed: No such snapshot: {target}\n")
            parent = self.snaps[name].pop(snap)["parent"]
            for other in self.snaps[name].values():
                if other["parent"] == snap:
                    other["parent"] = parent
            if self.current.get(name) == snap:
                self.current[name] = parent
            return Reply()
        return Reply(1, stderr=f"unexpected {argv}")

    def snapshot(self, name: str, args: list[str]) -> Reply:
        if name not in self.states:
            return Reply(2, stderr=f'snapshot failed: instance "{name}" does not exist\n')
        if self.states[name] != "Stopped":
            return Reply(2, stderr="snapshot failed: Multipass can only take snapshots of stopped instances.\n")
        snap = args[args.index("--name") + 1] if "--name" in args else f"snapshot{self.taken.get(name, 0) + 1}"
        if snap in self.snaps[name]:
            return Reply(2, stderr=f"snapshot failed: Snapshot already exists: {name}.{snap}\n")
        comment = args[args.index("--comment") + 1] if "--comment" in args else ""
        self._take(name, snap, comment)
        return Reply(stdout=f"Snapshot taken: {name}.{snap}\n")

    def restore(self, target: str, args: list[str]) -> Reply:
        name, _, snap = target.partition(".")
        if name not in self.states:
            return Reply(2, stderr=f'restore failed: instance "{name}" does not exist\n')
        if snap not in self.snaps[name]:
            return Reply(2, stderr=f"restore failed: No such snapshot: {target}\n")
        if self.states[name] != "Stopped":
            return Reply(2, stderr="restore failed: Multipass can only restore snapshots of stopped instances.\n")
        if "--destructive" not in args:
            return Reply(1, stderr="Caught an unhandled exception: Unable to query client for confirmation.\n")
        self.restored.append(target)
        self.current[name] = snap
        return Reply(stdout=f"Snapshot restored: {target}\n")


@pytest.fixture
def world(monkeypatch, mp_bin):
    world = World()
    world.fake = FakeMultipass(responder=world.respond)
    route_cli_to(world.fake, monkeypatch, mp_bin)
    return world


def run_module(module, capsys, **args) -> dict:
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


def mutating(world) -> list[list[str]]:
    return [argv[1:] for argv in world.fake.argvs if argv[1] in MUTATING]


# --------------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------------

MANIFEST = json.dumps({"build_id": "x", "note": "quotes \" ' $HOME `id` ;| and\nnewline", "dash": "--help"})


def test_present_takes_it_once(world, capsys):
    world.add("vm")
    first = run_module(snapshot, capsys, instance="vm", name="sealed", comment=MANIFEST)
    assert first["changed"] is True
    assert first["actions"] == ["snapshot --name sealed vm"]
    assert mutating(world) == [["snapshot", "--name", "sealed", "--comment", MANIFEST, "--", "vm"]]
    assert first["snapshot"] == {
        "name": "sealed",
        "parent": None,
        "comment": MANIFEST,  # one argv element, byte for byte
        "created": "Sat Nov 21 22:15:00 2026 UTC",
        "children": [],
    }
    assert list(first["snapshots"]) == ["sealed"]
    world.fake.calls.clear()
    second = run_module(snapshot, capsys, instance="vm", name="sealed", comment="another comment")
    assert second["changed"] is False
    assert second["actions"] == []
    assert second["snapshot"]["comment"] == MANIFEST  # an existing snapshot is left as it is
    assert mutating(world) == []


def test_present_on_a_running_instance_fails_with_multipass_message(world, capsys):
    world.add("vm", state="Running")
    result = run_module(snapshot, capsys, instance="vm", name="sealed")
    assert result["failed"] is True
    assert result["msg"] == "snapshot failed: Multipass can only take snapshots of stopped instances."
    assert result["rc"] == 2
    assert result["transient"] is False
    assert world.states["vm"] == "Running"  # never stopped behind the user's back
    assert world.snaps["vm"] == {}


def test_present_on_a_missing_instance(world, capsys):
    result = run_module(snapshot, capsys, instance="ghost", name="sealed")
    assert result["failed"] is True
    assert 'instance "ghost" does not exist' in result["msg"]
    assert mutating(world) == []


def test_an_existing_snapshot_of_a_running_instance_is_fine(world, capsys):
    world.add("vm", state="Running", sealed="c")
    result = run_module(snapshot, capsys, instance="vm", name="sealed")
    assert (result.get("failed"), result["changed"]) == (None, False)


def test_restored_always_restores(world, capsys):
    world.add("vm", base="", sealed="manifest")
    for _ in range(2):
        result = run_module(snapshot, capsys, instance="vm", name="base", state="restored")
        assert result["changed"] is True
        assert result["actions"] == ["restore --destructive vm.base"]
    assert world.restored == ["vm.base", "vm.base"]
    assert result["snapshot"]["children"] == ["sealed"]


@pytest.mark.parametrize(
    ("state", "snaps", "message"),
    [
        ("Stopped", {}, "restore failed: No such snapshot: vm.sealed"),
        ("Running", {"sealed": ""}, "restore failed: Multipass can only restore snapshots of stopped instances."),
    ],
)
def test_restored_failures_carry_multipass_message(world, capsys, state, snaps, message):
    world.add("vm", state=state, **snaps)
    result = run_module(snapshot, capsys, instance="vm", name="sealed", state="restored")
    assert result["failed"] is True
    assert result["msg"] == message
    assert world.restored == []


def test_absent(world, capsys):
    world.add("vm", state="Running", base="", sealed="")
    result = run_module(snapshot, capsys, instance="vm", name="base", state="absent")
    assert result["changed"] is True
    assert mutating(world) == [["delete", "--purge", "--", "vm.base"]]
    assert result["snapshot"] == {}
    assert list(result["snapshots"]) == ["sealed"]
    world.fake.calls.clear()
    again = run_module(snapshot, capsys, instance="vm", name="base", state="absent")
    assert again["changed"] is False
    assert mutating(world) == []


def test_absent_on_a_missing_instance_is_done(world, capsys):
    result = run_module(snapshot, capsys, instance="ghost", name="sealed", state="absent")
    assert (result.get("failed"), result["changed"], result["snapshots"]) == (None, False, {})
    assert mutating(world) == []


@pytest.mark.parametrize(
    ("state", "snaps"),
    [("present", {}), ("restored", {"sealed": ""}), ("absent", {"sealed": ""})],
)
def test_check_mode_makes_no_mutating_call(world, capsys, state, snaps):
    world.add("vm", **snaps)
    before = json.dumps(world.snaps, sort_keys=True)
    result = run_module(snapshot, capsys, instance="vm", name="sealed", state=state, _ansible_check_mode=True)
    assert result["changed"] is True
    assert result["actions"]
    assert mutating(world) == []
    assert set(world.fake.subcommands()) == {"info"}
    assert json.dumps(world.snaps, sort_keys=True) == before
    assert world.restored == []


@pytest.mark.parametrize(
    ("state", "instance_state", "snaps", "message"),
    [
        ("present", "Running", {}, "can only take snapshots of stopped instances"),
        ("restored", "Stopped", {}, "No such snapshot: vm.sealed"),
        ("restored", "Suspended", {"sealed": ""}, "can only restore snapshots of stopped instances"),
    ],
)
def test_check_mode_predicts_multipass_refusals(world, capsys, state, instance_state, snaps, message):
    world.add("vm", state=instance_state, **snaps)
    result = run_module(snapshot, capsys, instance="vm", name="sealed", state=state, _ansible_check_mode=True)
    assert result["failed"] is True
    assert message in result["msg"]
    assert result["msg"].startswith(("snapshot would fail", "restore would fail"))
    assert mutating(world) == []


def test_diff(world, capsys):
    world.add("vm")
    result = run_module(snapshot, capsys, instance="vm", name="sealed", comment="c", _ansible_diff=True)
    assert result["diff"] == {
        "before": {"snapshot": "sealed", "state": "absent"},
        "after": {"snapshot": "sealed", "state": "present", "comment": "c"},
    }
    gone = run_module(snapshot, capsys, instance="vm", name="sealed", state="absent", _ansible_diff=True)
    assert gone["diff"] == {
        "before": {"snapshot": "sealed", "state": "present"},
        "after": {"snapshot": "sealed", "state": "absent"},
    }


@pytest.mark.parametrize(
    ("instance", "name", "message"),
    [
        ("1vm", "sealed", "Invalid instance name supplied: 1vm"),
        ("vm", "a.b", 'Invalid snapshot name: "a.b"'),
        ("vm", "-x", 'Invalid snapshot name: "-x"'),
        ("vm", "", 'Invalid snapshot name: ""'),
        ("vm;id", "s", "Invalid instance name supplied: vm;id"),
    ],
)
def test_invalid_names_are_rejected_before_calling_multipass(world, capsys, instance, name, message):
    result = run_module(snapshot, capsys, instance=instance, name=name)
    assert result["failed"] is True
    assert message in result["msg"]
    assert world.fake.calls == []


def test_daemon_down_is_transient(world, capsys):
    world.fake.responder = lambda argv: Reply(2, stderr="info failed: cannot connect to the multipass socket\n")
    result = run_module(snapshot, capsys, instance="vm", name="sealed", retries=0)
    assert result["failed"] is True
    assert result["transient"] is True
    assert result["msg"] == "info failed: cannot connect to the multipass socket"


# --------------------------------------------------------------------------------------------------
# instance_info: snapshots
# --------------------------------------------------------------------------------------------------


def snapshot_queries(world) -> list[list[str]]:
    return [argv[1:] for argv in world.fake.argvs if "--snapshots" in argv]


def test_instance_info_without_the_option_makes_no_snapshot_call(world, capsys):
    world.add("gold", sealed="m")
    result = run_module(instance_info, capsys, name=["gold"])
    assert "snapshots" not in result["instances"]["gold"]
    assert result["instances"]["gold"]["snapshot_count"] == 1
    assert snapshot_queries(world) == []


def test_instance_info_with_snapshots(world, capsys):
    world.add("gold", base="first", sealed='{"k": 1}')
    world.add("plain")
    result = run_module(instance_info, capsys, name=["gold", "plain", "ghost"], snapshots=True)
    gold = result["instances"]["gold"]["snapshots"]
    assert gold == {
        "base": {
            "name": "base",
            "parent": None,
            "comment": "first",
            "created": "Sat Nov 21 22:15:00 2026 UTC",
            "children": ["sealed"],
        },
        "sealed": {
            "name": "sealed",
            "parent": "base",
            "comment": '{"k": 1}',
            "created": "Sat Nov 21 22:15:00 2026 UTC",
            "children": [],
        },
    }
    assert result["instances"]["plain"]["snapshots"] == {}
    assert result["missing"] == ["ghost"]
    # one call, only for the instance that has snapshots
    assert snapshot_queries(world) == [["info", "--snapshots", "--format", "json", "--", "gold"]]
    assert mutating(world) == []


def test_instance_info_snapshots_of_an_instance_deleted_meanwhile(world, capsys):
    world.add("gold", sealed="m")
    world.add("other", s1="")
    original = world.respond

    def respond(argv):
        if "--snapshots" in argv:
            world.states.pop("gold", None)
        return original(argv)

    world.fake.responder = respond
    result = run_module(instance_info, capsys, snapshots=True)
    assert sorted(result["instances"]) == ["other"]
    assert result["missing"] == ["gold"]
    assert list(result["instances"]["other"]["snapshots"]) == ["s1"]


def test_module_docs_are_valid():
    import yaml

    for text in (snapshot.DOCUMENTATION, snapshot.EXAMPLES, snapshot.RETURN):
        assert yaml.safe_load(text)
