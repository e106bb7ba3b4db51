"""Unit tests of the shared wrapper ``agentvm.multipass.plugins.module_utils.multipass``.

Expected values are written out by hand from Multipass 1.16.3's documented behaviour and error texts (the §
marks group the cases by command); the JSON inputs are the literals of Multipass's own formatter tests, copied
verbatim into ``fixtures/`` (see fixtures/README.md).
"""

from __future__ import annotations

import subprocess

import pytest
from mp_fakes import FakeMultipass, Reply, fixture_text

from ansible_collections.agentvm.multipass.plugins.module_utils import multipass as mp

# --------------------------------------------------------------------------------------------------
# JSON parsing (reference §3.2-§3.4)
# --------------------------------------------------------------------------------------------------


def test_parse_list_multiple():  # §3.2 json_list_multiple
    assert mp.parse_list(fixture_text("list_multiple.json")) == [
        {"name": "bogus-instance", "state": "Running", "ipv4": ["10.21.124.56"], "release": "Ubuntu 16.04 LTS"},
        {"name": "bombastic", "state": "Stopped", "ipv4": [], "release": "Ubuntu 18.04 LTS"},
    ]


def test_parse_list_empty():  # §3.2 json_list_empty
    assert mp.parse_list(fixture_text("list_empty.json")) == []


def test_parse_info_empty():  # §3.3 json_info_empty
    assert mp.parse_info(fixture_text("info_empty.json")) == {}


def test_info_multiple_running_instance():  # §3.3 json_info_multiple_instances, "bogus-instance"
    info = mp.parse_info(fixture_text("info_multiple.json"))
    assert sorted(info) == ["bogus-instance", "bombastic"]
    record = mp.normalize_instance("bogus-instance", info["bogus-instance"])
    assert record == {
        "name": "bogus-instance",
        "state": "Running",
        "ipv4": ["10.21.124.56"],
        "release": "Ubuntu 16.04.3 LTS",
        "image_hash": "1797c5c82016c1e65f4008fcf89deae3a044ef76087a9ec5b907c6d64a3609ac",
        "image_release": "16.04 LTS",
        "cpus": 4,
        "memory": 1610612736,
        "memory_used": 38797312,
        "disk": 6764573492,
        "disk_used": 1932735284,
        "load": [0.03, 0.1, 0.15],
        "snapshot_count": 1,
        "mounts": {
            "source": {
                "gid_mappings": ["1000:501"],
                "source_path": "/home/user/source",
                "uid_mappings": ["1000:501"],
            }
        },
    }


def test_info_multiple_stopped_instance_has_no_runtime_fields():  # §3.3 "bombastic"
    info = mp.parse_info(fixture_text("info_multiple.json"))
    record = mp.normalize_instance("bombastic", info["bombastic"])
    assert record["state"] == "Stopped"
    assert record["ipv4"] == []
    assert record["release"] is None
    assert record["cpus"] is None
    assert record["memory"] is None
    assert record["disk"] is None
    assert record["load"] == []
    assert record["snapshot_count"] == 3
    assert record["image_hash"] == "ab5191cc172564e7cc0eafd397312a32598823e645279c820f0935393aead509"
    assert record["image_release"] == "18.04 LTS"


def test_stopped_instance_takes_release_from_list():  # §3.2 + §3.3: list always has the image title
    listed = {e["name"]: e for e in mp.parse_list(fixture_text("list_multiple.json"))}
    info = mp.parse_info(fixture_text("info_multiple.json"))
    assert mp.normalize_instance("bombastic", info["bombastic"], listed["bombastic"])["release"] == "Ubuntu 18.04 LTS"
    # a running instance keeps the guest's own PRETTY_NAME
    running = mp.normalize_instance("bogus-instance", info["bogus-instance"], listed["bogus-instance"])
    assert running["release"] == "Ubuntu 16.04.3 LTS"


def test_info_illustrative_fresh_instance():  # §3.3 illustrative "web1"
    info = mp.parse_info(fixture_text("info_running_illustrative.json"))
    record = mp.normalize_instance("web1", info["web1"])
    assert (record["cpus"], record["memory"], record["disk"]) == (1, 1003761664, 5020352512)
    assert record["snapshot_count"] == 0
    assert record["ipv4"] == ["10.113.204.15"]
    assert record["image_release"] == "24.04 LTS"
    assert record["mounts"] == {}


def test_info_with_snapshots():  # §3.4 json_info_multiple_mixed_instances_and_snapshots
    info = mp.parse_info(fixture_text("info_with_snapshots.json"))
    assert sorted(info) == ["bogus-instance", "messier-87"]
    assert mp.normalize_instance("bogus-instance", info["bogus-instance"])["snapshot_count"] == 2
    assert sorted(info["bogus-instance"]["snapshots"]) == ["snapshot1", "snapshot2"]
    # an entry that only carries snapshots has no state of its own
    only_snapshots = mp.normalize_instance("messier-87", info["messier-87"])
    assert only_snapshots["state"] == "Unknown"
    assert only_snapshots["snapshot_count"] is None


def test_list_snapshots_document_is_not_a_list():  # §3.5: a different document; parse_list must refuse it
    with pytest.raises(mp.MultipassParseError):
        mp.parse_list(fixture_text("list_snapshots.json"))


def test_parse_snapshots_info():  # §3.4 json_info_multiple_mixed_instances_and_snapshots
    snapshots = mp.parse_snapshots_info(fixture_text("info_with_snapshots.json"))
    assert snapshots == {
        "bogus-instance": {
            "snapshot1": {
                "name": "snapshot1",
                "parent": None,
                "comment": "",
                "created": "1972-01-01T09:59:59.021Z",
                "children": [],
            },
            "snapshot2": {
                "name": "snapshot2",
                "parent": "snapshot1",
                "comment": "",
                "created": "1972-01-01T10:00:20.021Z",
                "children": ["snapshot3", "snapshot4"],  # as printed, even when those are not in the document
            },
        },
        "messier-87": {  # the snapshots-only shape of ``info --snapshots``
            "black-hole": {
                "name": "black-hole",
                "parent": None,
                "comment": "Captured by EHT",
                "created": "2019-04-10T11:59:59Z",
                "children": [],
            }
        },
    }


def test_parse_snapshots_list():  # §3.5 json_list_multiple_snapshots: comment and parent only
    snapshots = mp.parse_snapshots_list(fixture_text("list_snapshots.json"))
    assert sorted(snapshots) == ["hale-roller", "prosperous-spadefish"]
    assert snapshots["hale-roller"] == {
        "pristine": {
            "name": "pristine",
            "parent": None,
            "comment": "A first snapshot",
            "created": None,
            "children": ["rocking", "rolling"],  # derived from the parents
        },
        "rocking": {
            "name": "rocking",
            "parent": "pristine",
            "comment": "A very long comment that should be truncated by the table formatter",
            "created": None,
            "children": [],
        },
        "rolling": {
            "name": "rolling",
            "parent": "pristine",
            "comment": "Loaded with stuff",
            "created": None,
            "children": [],
        },
    }
    spadefish = snapshots["prosperous-spadefish"]
    assert spadefish["snapshot2"]["comment"] == "Before restoring snap1\nContains a newline that\r\nshould be truncated"
    assert spadefish["snapshot2"]["children"] == ["snapshot10"]
    assert spadefish["snapshot10"]["parent"] == "snapshot2"


@pytest.mark.parametrize("parse", [mp.parse_snapshots_info, mp.parse_snapshots_list])
def test_no_snapshots(parse):  # §3.5 "No snapshots": {"errors": [], "info": {}}
    assert parse(fixture_text("info_empty.json")) == {}


@pytest.mark.parametrize("parse", [mp.parse_snapshots_info, mp.parse_snapshots_list])
@pytest.mark.parametrize("text", ["", "[]", '{"info": []}', '{"list": []}'])
def test_malformed_snapshot_documents_raise_parse_error(parse, text):
    with pytest.raises(mp.MultipassParseError):
        parse(text)


def test_snapshot_entries_of_the_wrong_type_are_dropped_not_trusted():
    text = '{"errors": [], "info": {"vm": {"snapshots": {"a": "oops", "b": {"comment": 7, "parent": ["x"], '
    text += '"children": [1, "c"], "created": 3}}}, "other": 5}}'
    assert mp.parse_snapshots_info(text) == {
        "vm": {"b": {"name": "b", "parent": None, "comment": "", "created": None, "children": ["c"]}}
    }


def test_parse_version():  # §3.6 json_version_daemon_no_updates / json_version_client (daemon down)
    assert mp.parse_version(fixture_text("version_daemon.json")) == {
        "multipass": "Client version",
        "multipassd": "Daemon version",
    }
    assert mp.parse_version(fixture_text("version_client.json")) == {"multipass": "Client version", "multipassd": None}
    with pytest.raises(mp.MultipassParseError):
        mp.parse_version('{"multipassd": "1.16.3"}')


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("Snapshot taken: vm.sealed\n", "sealed"),
        (
            "\x1b[2K\x1b[0A\x1b[0ETaking snapshot  \b|\b/\x1b[2K\x1b[0A\x1b[0ESnapshot taken: vm-1.snapshot3\n",
            "snapshot3",
        ),
        ("", None),
        ("something else\n", None),
    ],
)
def test_parse_snapshot_taken(stdout, expected):  # §1.2 success message, spinner on stdout
    assert mp.parse_snapshot_taken(stdout) == expected


@pytest.mark.parametrize(
    ("name", "valid"),
    [("a", True), ("vm-1", True), ("sealed", True), ("1vm", False), ("vm-", False), ("a.b", False), ("", False),
     ("v_m", False), ("a b", False), ("-a", False)],
)  # fmt: skip
def test_valid_name(name, valid):  # §2.1 instance-name regex, §2.9 snapshots follow it
    assert mp.valid_name(name) is valid


def test_running_without_ip_and_na():  # §3.2: a running instance without an IP shows ["N/A"]
    text = '{\n    "list": [\n        {\n            "ipv4": [\n                "N/A"\n            ],\n'
    text += '            "name": "x",\n            "release": "Not Available",\n            "state": "Running"\n'
    text += "        }\n    ]\n}\n"
    entry = mp.parse_list(text)[0]
    assert entry["ipv4"] == ["N/A"]
    assert mp.normalize_instance("x", None, entry)["ipv4"] == []


def test_spinner_bytes_before_json_are_tolerated():  # §1.2: the spinner writes to stdout even without a TTY
    noisy = "\x1b[2K\x1b[0A\x1b[0EStarting x  \b|\b/\b-\b\\" + fixture_text("list_empty.json")
    assert mp.parse_list(noisy) == []


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"list": 3}'])
def test_malformed_output_raises_parse_error(text):
    with pytest.raises(mp.MultipassParseError):
        mp.parse_list(text)


# --------------------------------------------------------------------------------------------------
# Error mapping: each stderr text of the reference's catalogue (§5.3, plus the per-command sections)
# --------------------------------------------------------------------------------------------------

CATALOGUE = [
    # §5.3 Instance does not exist
    ("start failed: instance(s) missing\nInstance 'x' does not exist.\n\n", 2, mp.InstanceNotFoundError),
    *[
        (f'{cmd} failed: The following errors occurred:\ninstance "x" does not exist\n', 2, mp.InstanceNotFoundError)
        for cmd in ("stop", "suspend", "restart", "delete", "recover", "info", "exec", "shell", "transfer")
    ],
    *[
        (f'{cmd} failed: instance "x" does not exist\n', 2, mp.InstanceNotFoundError)
        for cmd in ("clone", "snapshot", "restore")
    ],
    *[
        (f"{cmd} failed: The following errors occurred:\ninstance 'x' does not exist\n", 2, mp.InstanceNotFoundError)
        for cmd in ("mount", "umount")
    ],
    # §5.3 already exists / concurrent operation
    ('launch failed: instance "x" already exists\n', 2, mp.AlreadyExistsError),
    ('clone failed: instance "x" already exists\n', 2, mp.AlreadyExistsError),
    ('clone failed: instance "x" is being prepared\n', 2, mp.InstanceBusyError),
    # §5.3 invalid name
    (
        "launch failed: Invalid arguments supplied\nInvalid instance name supplied: 1nvalid-name\n",
        2,
        mp.InvalidArgumentError,
    ),
    ("clone failed: Invalid destination instance name: 1nvalid-name\n", 2, mp.InvalidArgumentError),
    ('snapshot failed: Invalid snapshot name: "bad.name".\n', 2, mp.InvalidArgumentError),
    (
        "launch failed: Invalid arguments supplied\nInvalid memory size value supplied: 64M.\n",
        2,
        mp.InvalidArgumentError,
    ),
    (
        "launch failed: Invalid arguments supplied\nInvalid disk size value supplied: 100M.\n",
        2,
        mp.InvalidArgumentError,
    ),
    ("launch failed: Invalid arguments supplied\nInvalid network options supplied\n", 2, mp.InvalidArgumentError),
    # §5.3 wrong state
    ("clone failed: Multipass can only clone stopped instances.\n", 2, mp.InstanceStateError),
    ("snapshot failed: Multipass can only take snapshots of stopped instances.\n", 2, mp.InstanceStateError),
    ("restore failed: Multipass can only restore snapshots of stopped instances.\n", 2, mp.InstanceStateError),
    ('transfer failed: instance "x" is not running\n', 2, mp.InstanceNotRunningError),
    (
        "restart failed: Instance 'x' is already running, but in an unknown state.\nTry to stop and start it instead.\n",
        2,
        mp.InstanceStateError,
    ),
    ("stop failed: Cannot shut down suspended instance x.\nUse --force to power it off.\n", 2, mp.InstanceStateError),
    ('exec failed: The following errors occurred:\ninstance "x" is deleted\n', 2, mp.InstanceDeletedError),
    # §2.3 start per-state errors
    (
        "start failed: instance(s) missing\nInstance 'x' is deleted. Use 'recover' to recover it or 'purge' to "
        "permanently delete it.\n\n",
        2,
        mp.InstanceDeletedError,
    ),
    (
        "start failed: Instance 'x' is already running, but in an unknown state.\nTry to stop it first.\n"
        "The following errors occurred:\n",
        2,
        mp.InstanceStateError,
    ),
    ("start failed: Cannot start the instance 'x' while suspending.\n", 2, mp.InstanceStateError),
    ("stop failed: Cannot shut down instance x while suspending.\n", 2, mp.InstanceStateError),
    ("stop failed: Cannot shut down instance x while starting.\n", 2, mp.InstanceStateError),
    # §5.3 timeouts
    ("Timed out waiting for instance launch.\n", 5, mp.MultipassTimeoutError),
    ("Timed out waiting for instance to start.\n", 5, mp.MultipassTimeoutError),
    ("Timed out waiting for instance to restart.\n", 5, mp.MultipassTimeoutError),
    ("launch failed: The following errors occurred:\nx: timed out waiting for response\n", 2, mp.MultipassTimeoutError),
    (
        "launch failed: The following errors occurred:\ntimed out waiting for initialization to complete\n",
        2,
        mp.MultipassTimeoutError,
    ),
    ("start failed: The following errors occurred:\nx: timed out waiting for response\n", 2, mp.MultipassTimeoutError),
    # §5.3 resources
    (
        "launch failed: Invalid arguments supplied\nInvalid memory size value supplied: 100M.\n",
        2,
        mp.InvalidArgumentError,
    ),
    (
        "launch failed: Invalid arguments supplied\nInvalid disk size value supplied: 256M.\n",
        2,
        mp.InvalidArgumentError,
    ),
    (
        "launch failed: Requested disk (1073741824 bytes) below minimum for this image (3758096384 bytes)\n",
        2,
        mp.InvalidArgumentError,
    ),
    (
        "launch failed: Available disk (1073741824 bytes) below minimum for this image (3758096384 bytes)\n",
        2,
        mp.InvalidArgumentError,
    ),
    ('launch failed: Unable to find an image matching "foo" in remote "".\n', 2, mp.InvalidArgumentError),
    ("Error: invalid CPU count '0', need a positive integer value.\n", 1, mp.InvalidArgumentError),
    ("launch failed: failed to start qemu instance: boom\n", 2, mp.MultipassCommandError),
    (
        "launch failed: qemu quit unexpectedly with exit code 1, check logs for more details\n",
        2,
        mp.MultipassCommandError,
    ),
    ("KVM support is not enabled on this machine.\nPlease ensure the following:\n", 2, mp.MultipassCommandError),
    # §5.3 daemon not reachable / not authenticated
    ("list failed: cannot connect to the multipass socket\n", 2, mp.DaemonUnavailableError),
    ("list failed: multipass socket access denied\n", 2, mp.DaemonAccessDeniedError),
    (
        "list failed: The client is not authenticated with the Multipass service.\n"
        "Please use 'multipass authenticate' before proceeding.\n",
        2,
        mp.NotAuthenticatedError,
    ),
    # §5.3 cloud-init (exit 1)
    (
        "Could not load cloud-init configuration: bad file: /definitely/missing-file\n"
        "Please ensure that Multipass can read it.\n",
        1,
        mp.InvalidArgumentError,
    ),
    (
        "Could not load cloud-init configuration: yaml-cpp: error at line 3, column 1: end of map not found\n",
        1,
        mp.InvalidArgumentError,
    ),
    # §5.3 backend feature missing
    ("clone failed: The clone feature is not implemented on this backend.\n", 2, mp.UnsupportedError),
    ("suspend failed: The suspend feature is not implemented on this backend.\n", 2, mp.UnsupportedError),
    # §5.3 mount support missing
    (
        "Error enabling mount support in 'x'\n\nPlease install the 'multipass-sshfs' snap manually inside the instance.\n",
        2,
        mp.MultipassCommandError,
    ),
    # §2.5 exec
    ("exec failed: ssh connection failed: 'Timeout connecting to 127.0.0.1'\n", 2, mp.SSHConnectionError),
    ("exec failed: ssh connection failed: 'Failed to connect: No route to host'\n", 2, mp.SSHConnectionError),
    ("exec failed: Cannot retrieve credentials in unknown state\n", 2, mp.InstanceStateError),
    (
        "exec failed: \"x\" is scheduled to shut down in less than a minute, use 'multipass stop --cancel x' "
        "to cancel the shutdown.\n",
        2,
        mp.InstanceStateError,
    ),
    ("Wrong number of arguments\n", 1, mp.MultipassUsageError),
    # §2.7 transfer: SFTP errors are not "instance does not exist"
    ("[2022-10-11T13:07:25.789] [error] [sftp] remote target does not exist\n", 2, mp.TransferError),
    ('Target "bar" is not a directory\n', 2, mp.TransferError),
    ("Source must be from inside an instance\n", 1, mp.MultipassUsageError),
    ('transfer failed: The following errors occurred:\ninstance "x" does not exist\n', 2, mp.InstanceNotFoundError),
    # §2.1 client-side launch checks (exit 1)
    ('Mount source path "/nope" does not exist\n', 1, mp.MultipassUsageError),
    ("error: --timeout value has to be a positive integer\n", 1, mp.MultipassUsageError),
    (
        "[2026-05-19T10:00:00.000] [error] [client] Caught an unhandled exception: 1CiG is not a valid memory size - "
        "need a non-negative integer (in base 10) or a decimal followed by K, M, or G (e.g. 1234B, 42MiB, 0.5G)\n",
        1,
        mp.InvalidArgumentError,
    ),
    ("Invalid remote and source image name supplied\n", 1, mp.InvalidArgumentError),
    # §2.9 snapshots and restore
    ("restore failed: No such snapshot: inst.snap\n", 2, mp.SnapshotNotFoundError),
    ("delete failed: No such snapshot: inst.snap\n", 2, mp.SnapshotNotFoundError),
    ("snapshot failed: Snapshot already exists: inst.snap\n", 2, mp.AlreadyExistsError),
    ("snapshot failed: The snapshots feature is not implemented on this backend.\n", 2, mp.UnsupportedError),
    ("Need the name of an instance to snapshot.\n", 1, mp.MultipassUsageError),
    ("Too many arguments supplied\n", 1, mp.MultipassUsageError),
    (
        "Invalid format. Please specify the instance to restore and snapshot to use in the form "
        "<instance>.<snapshot>.\n",
        1,
        mp.MultipassUsageError,
    ),
    # §2.4 deleting snapshots
    ("delete failed: Cannot delete snapshots of deleted instances: inst.snap\n", 2, mp.InstanceDeletedError),
    (
        "[2026-05-19T10:00:00.000] [error] [client] Caught an unhandled exception: Snapshots can only be purged "
        "(after deletion, they cannot be recovered). Unable to query client for confirmation. Please use the "
        "`--purge` flag if that is what you want.\n",
        1,
        mp.MultipassUsageError,
    ),
    # info of a missing snapshot (the double's text for ``info inst.snap``)
    ('info failed: The following errors occurred:\nsnapshot "snap" does not exist\n', 2, mp.SnapshotNotFoundError),
    (
        "[2026-05-19T10:00:00.000] [error] [client] Caught an unhandled exception: Unable to query client for "
        "confirmation. Use '--destructive' to automatically discard current machine state.\n",
        1,
        mp.MultipassUsageError,
    ),
    # §2.12 settings
    (
        "set failed: Cannot update instance settings; instance: i; reason: Instance must be stopped for modification\n",
        2,
        mp.InstanceStateError,
    ),
    # §1.1 parse errors
    ("Unknown option 'x'.\n", 1, mp.MultipassUsageError),
    ("Invalid format type given.\n", 1, mp.InvalidArgumentError),
    # §2.14
    ("authenticate failed: Passphrase is not correct. Please try again.\n", 2, mp.MultipassCommandError),
]


@pytest.mark.parametrize(("stderr", "rc", "expected"), CATALOGUE, ids=[c[0][:60] for c in CATALOGUE])
def test_error_catalogue(stderr, rc, expected):
    error = mp.classify(rc, "", stderr, ["multipass", "x"])
    assert type(error) is expected
    assert error.message == stderr.strip()  # Multipass's own words, untouched
    assert error.rc == rc


@pytest.mark.parametrize(
    ("cls", "unreachable", "transient"),
    [
        (mp.DaemonUnavailableError, True, True),
        (mp.SSHConnectionError, True, True),
        (mp.InstanceBusyError, False, True),
        (mp.InstanceNotFoundError, True, False),
        (mp.InstanceDeletedError, True, False),
        (mp.InstanceNotRunningError, True, False),
        (mp.MultipassUsageError, False, False),
        (mp.InstanceStateError, False, False),
        (mp.AlreadyExistsError, False, False),
    ],
)
def test_error_kinds(cls, unreachable, transient):
    assert (cls.unreachable, cls.transient) == (unreachable, transient)


def test_empty_output_still_gives_a_message():
    error = mp.classify(2, "", "", ["multipass", "stop", "x"])
    assert error.message == "multipass stop exited with code 2 and printed nothing"


@pytest.mark.parametrize(
    ("rc", "stderr", "expected"),
    [
        (0, "", None),
        (1, "grep: nothing\n", None),  # the remote command's own failure
        (2, "ls: cannot access 'x': No such file or directory\n", None),
        (127, "sh: 1: nope: not found\n", None),
        (2, 'exec failed: The following errors occurred:\ninstance "x" does not exist\n', mp.InstanceNotFoundError),
        (2, "exec failed: cannot connect to the multipass socket\n", mp.DaemonUnavailableError),
        (
            2,
            "[2026-05-19T10:00:00.000] [error] [daemon] oops\nexec failed: ssh connection failed: 'x'\n",
            mp.SSHConnectionError,
        ),
        (255, "exec failed: ssh connection failed: 'x'\n", mp.SSHConnectionError),  # HEAD's exit code
        (2, "my tool says\nexec failed: not really\n", None),  # remote output that merely mentions it
    ],
)
def test_exec_failure_vs_remote_exit_status(rc, stderr, expected):
    error = mp.exec_failure(rc, "", stderr)
    assert (type(error) if error else None) is expected


# --------------------------------------------------------------------------------------------------
# argv building
# --------------------------------------------------------------------------------------------------

ARGV_CASES = [
    ("list", lambda: mp.list_argv("mp"), ["mp", "list", "--format", "json"]),
    ("info all", lambda: mp.info_argv("mp"), ["mp", "info", "--format", "json"]),
    (
        "info static",
        lambda: mp.info_argv("mp", ["a", "b"], runtime=False),
        ["mp", "info", "--format", "json", "--no-runtime-information", "--", "a", "b"],
    ),
    (
        "exec",
        lambda: mp.exec_argv("mp", "vm", ["/bin/sh", "-c", "echo 'a b'"]),
        ["mp", "exec", "--no-map-working-directory", "vm", "--", "/bin/sh", "-c", "echo 'a b'"],
    ),
    (
        "exec workdir",
        lambda: mp.exec_argv("mp", "vm", ["ls"], working_directory="/srv/my dir"),
        ["mp", "exec", "--working-directory", "/srv/my dir", "vm", "--", "ls"],
    ),
    ("push", lambda: mp.transfer_push_argv("mp", "vm", "/tmp/a b.txt"), ["mp", "transfer", "-", "vm:/tmp/a b.txt"]),
    (
        "push parents",
        lambda: mp.transfer_push_argv("mp", "vm", "/x/y", parents=True),
        ["mp", "transfer", "--parents", "-", "vm:/x/y"],
    ),
    ("pull", lambda: mp.transfer_pull_argv("mp", "vm", "/tmp/ü.bin"), ["mp", "transfer", "vm:/tmp/ü.bin", "-"]),
    ("launch bare", lambda: mp.launch_argv("mp", "vm"), ["mp", "launch", "--name", "vm"]),
    (
        "launch full",
        lambda: mp.launch_argv("mp", "vm", "24.04", 2, "2G", "10G", True, 900),
        [
            "mp",
            "launch",
            "--name",
            "vm",
            "--cpus",
            "2",
            "--memory",
            "2G",
            "--disk",
            "10G",
            "--timeout",
            "900",
            "--cloud-init",
            "-",
            "--",
            "24.04",
        ],
    ),
    ("clone", lambda: mp.clone_argv("mp", "golden", "run-1"), ["mp", "clone", "--name", "run-1", "--", "golden"]),
    ("start", lambda: mp.start_argv("mp", "vm", 120), ["mp", "start", "--timeout", "120", "--", "vm"]),
    ("stop", lambda: mp.stop_argv("mp", "vm"), ["mp", "stop", "--", "vm"]),
    ("stop force", lambda: mp.stop_argv("mp", "vm", force=True), ["mp", "stop", "--force", "--", "vm"]),
    ("delete", lambda: mp.delete_argv("mp", "vm"), ["mp", "delete", "--", "vm"]),
    ("delete purge", lambda: mp.delete_argv("mp", "vm", purge=True), ["mp", "delete", "--purge", "--", "vm"]),
    # §2.9 snapshot and restore; §2.4 snapshots are deleted with --purge only; §2.8 info/list --snapshots
    ("snapshot auto-named", lambda: mp.snapshot_argv("mp", "vm"), ["mp", "snapshot", "--", "vm"]),
    (
        "snapshot named with comment",
        lambda: mp.snapshot_argv("mp", "vm", "sealed", '{"a": "b c", "d": "-e"}'),
        ["mp", "snapshot", "--name", "sealed", "--comment", '{"a": "b c", "d": "-e"}', "--", "vm"],
    ),
    (
        "snapshot empty comment",
        lambda: mp.snapshot_argv("mp", "vm", "s1", ""),
        ["mp", "snapshot", "--name", "s1", "--", "vm"],
    ),
    ("restore", lambda: mp.restore_argv("mp", "vm", "sealed"), ["mp", "restore", "--destructive", "--", "vm.sealed"]),
    (
        "delete snapshot",
        lambda: mp.delete_snapshot_argv("mp", "vm", "sealed"),
        ["mp", "delete", "--purge", "--", "vm.sealed"],
    ),
    (
        "info snapshots",
        lambda: mp.snapshots_info_argv("mp", ["vm"]),
        ["mp", "info", "--snapshots", "--format", "json", "--", "vm"],
    ),
    ("info snapshots all", lambda: mp.snapshots_info_argv("mp"), ["mp", "info", "--snapshots", "--format", "json"]),
    ("list snapshots", lambda: mp.snapshots_list_argv("mp"), ["mp", "list", "--snapshots", "--format", "json"]),
    ("version", lambda: mp.version_argv("mp"), ["mp", "version", "--format", "json"]),
]


@pytest.mark.parametrize(("build", "expected"), [c[1:] for c in ARGV_CASES], ids=[c[0] for c in ARGV_CASES])
def test_argv(build, expected):
    assert build() == expected


# --------------------------------------------------------------------------------------------------
# Finding the executable
# --------------------------------------------------------------------------------------------------


def test_binary_from_env(mp_bin):
    assert mp.resolve_binary(None, {"MULTIPASS_BIN": mp_bin, "PATH": ""}) == mp_bin


def test_explicit_binary_wins_over_env(mp_bin, tmp_path):
    assert mp.resolve_binary(mp_bin, {"MULTIPASS_BIN": str(tmp_path / "other")}) == mp_bin


def test_binary_on_path(mp_bin):
    import os

    assert mp.resolve_binary(None, {"PATH": os.path.dirname(mp_bin)}) == mp_bin


def test_missing_binary_has_a_clear_message(tmp_path):
    with pytest.raises(mp.MultipassNotInstalledError, match=r"was not found on PATH.*MULTIPASS_BIN"):
        mp.resolve_binary(None, {"PATH": str(tmp_path)})
    with pytest.raises(mp.MultipassNotInstalledError, match="from MULTIPASS_BIN"):
        mp.resolve_binary(None, {"MULTIPASS_BIN": str(tmp_path / "nope")})


# --------------------------------------------------------------------------------------------------
# Running: stdin handling, retries with backoff, timeouts
# --------------------------------------------------------------------------------------------------


def make_cli(fake: FakeMultipass, mp_bin: str, **kwargs) -> tuple[mp.MultipassCLI, list[float]]:
    sleeps: list[float] = []
    cli = mp.MultipassCLI(binary=mp_bin, popen=fake.popen, sleep=sleeps.append, **kwargs)
    return cli, sleeps


def test_stdin_is_devnull_without_input(fake_multipass, mp_bin):
    fake_multipass.responder = lambda argv: Reply(stdout=fixture_text("list_empty.json"))
    cli, _ = make_cli(fake_multipass, mp_bin)
    cli.list_instances()
    assert fake_multipass.calls[0].stdin is subprocess.DEVNULL


def test_input_goes_through_a_pipe(fake_multipass, mp_bin):
    cli, _ = make_cli(fake_multipass, mp_bin)
    cli.exec("vm", ["cat"], input=b"data")
    call = fake_multipass.calls[0]
    assert call.stdin is subprocess.PIPE
    assert call.input == b"data"


def test_daemon_unavailable_is_retried_with_backoff(fake_multipass, mp_bin):
    replies = [Reply(2, stderr="list failed: cannot connect to the multipass socket\n")] * 2
    replies.append(Reply(stdout=fixture_text("list_multiple.json")))
    fake_multipass.responder = lambda argv: replies.pop(0)
    cli, sleeps = make_cli(fake_multipass, mp_bin, retry=mp.RetryPolicy(retries=3, backoff=0.5))
    assert [e["name"] for e in cli.list_instances()] == ["bogus-instance", "bombastic"]
    assert sleeps == [0.5, 1.0]
    assert len(fake_multipass.calls) == 3


def test_retries_give_up_with_the_last_error(fake_multipass, mp_bin):
    fake_multipass.responder = lambda argv: Reply(2, stderr="list failed: cannot connect to the multipass socket\n")
    cli, sleeps = make_cli(fake_multipass, mp_bin, retry=mp.RetryPolicy(retries=2, backoff=1, max_backoff=1.5))
    with pytest.raises(mp.DaemonUnavailableError, match="cannot connect to the multipass socket"):
        cli.list_instances()
    assert sleeps == [1, 1.5]
    assert len(fake_multipass.calls) == 3


def test_usage_errors_are_never_retried(fake_multipass, mp_bin):
    fake_multipass.responder = lambda argv: Reply(1, stderr="Unknown option 'x'.\n")
    cli, sleeps = make_cli(fake_multipass, mp_bin)
    with pytest.raises(mp.MultipassUsageError):
        cli.list_instances()
    assert (sleeps, len(fake_multipass.calls)) == ([], 1)


def test_state_errors_are_never_retried(fake_multipass, mp_bin):
    fake_multipass.responder = lambda argv: Reply(
        2, stderr="clone failed: Multipass can only clone stopped instances.\n"
    )
    cli, sleeps = make_cli(fake_multipass, mp_bin)
    with pytest.raises(mp.InstanceStateError, match="can only clone stopped instances"):
        cli.clone("golden", "run-1")
    assert (sleeps, len(fake_multipass.calls)) == ([], 1)


def test_being_prepared_is_retried_only_when_safe(fake_multipass, mp_bin):
    fake_multipass.responder = lambda argv: Reply(2, stderr='clone failed: instance "run-1" is being prepared\n')
    cli, _ = make_cli(fake_multipass, mp_bin)
    with pytest.raises(mp.InstanceBusyError):
        cli.clone("golden", "run-1")  # not idempotent: a second clone would race the first
    assert len(fake_multipass.calls) == 1
    fake_multipass.calls.clear()
    fake_multipass.responder = lambda argv: Reply(2, stderr='start failed: instance "run-1" is being prepared\n')
    with pytest.raises(mp.InstanceBusyError):
        cli.start("run-1")
    assert len(fake_multipass.calls) == 1 + mp.DEFAULT_RETRIES


def test_ssh_failure_of_exec_is_retried(fake_multipass, mp_bin):
    replies = [
        Reply(2, stderr="exec failed: ssh connection failed: 'Timeout connecting to 10.0.0.2'\n"),
        Reply(0, "ok"),
    ]
    fake_multipass.responder = lambda argv: replies.pop(0)
    cli, _ = make_cli(fake_multipass, mp_bin)
    result = cli.exec("vm", ["true"], input=b"x")
    assert (result.rc, result.stdout, result.attempts) == (0, "ok", 2)
    assert [c.input for c in fake_multipass.calls] == [b"x", b"x"]  # stdin is fed again


def test_remote_exit_status_is_not_an_error(fake_multipass, mp_bin):
    fake_multipass.responder = lambda argv: Reply(2, stderr="ls: cannot access 'x'\n")
    cli, _ = make_cli(fake_multipass, mp_bin)
    assert cli.exec("vm", ["ls", "x"]).rc == 2


def test_timeout_kills_the_client(fake_multipass, mp_bin):
    fake_multipass.responder = lambda argv: Reply(hang=True)
    cli, _ = make_cli(fake_multipass, mp_bin, timeout=7)
    with pytest.raises(mp.MultipassTimeoutError, match="did not finish within 7 seconds"):
        cli.exec("vm", ["sleep", "100"])
    assert fake_multipass.calls[0].killed
    assert fake_multipass.calls[0].timeout == 7


def test_zero_timeout_means_no_limit(fake_multipass, mp_bin):
    cli, _ = make_cli(fake_multipass, mp_bin, timeout=0)
    cli.exec("vm", ["true"])
    assert fake_multipass.calls[0].timeout is None


def test_launch_streams_cloud_init_and_bounds_the_wait(fake_multipass, mp_bin):
    cli, _ = make_cli(fake_multipass, mp_bin)
    cli.launch("vm", image="24.04", cloud_init="#cloud-config\npackages: [jq]\n", timeout=300)
    call = fake_multipass.calls[0]
    assert call.argv[-4:] == ["--cloud-init", "-", "--", "24.04"]
    assert call.input == b"#cloud-config\npackages: [jq]\n"
    assert call.timeout > 300  # Multipass's own --timeout fires first


def test_push_streams_the_file_and_pull_writes_it(fake_multipass, mp_bin, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00\x01payload")
    fake_multipass.responder = lambda argv: Reply(stdout=b"remote bytes" if argv[-1] == "-" else b"")
    cli, _ = make_cli(fake_multipass, mp_bin)
    cli.push("vm", str(src), "/home/ubuntu/dst.bin")
    assert fake_multipass.calls[0].input == b"\x00\x01payload"
    dst = tmp_path / "dst.bin"
    cli.pull("vm", "/home/ubuntu/x", str(dst))
    assert dst.read_bytes() == b"remote bytes"


def test_state_and_find(fake_multipass, mp_bin):
    def respond(argv):
        if argv[-1] == "bombastic":
            return Reply(stdout=fixture_text("info_multiple.json"))
        return Reply(2, stderr=f'info failed: The following errors occurred:\ninstance "{argv[-1]}" does not exist\n')

    fake_multipass.responder = respond
    cli, _ = make_cli(fake_multipass, mp_bin)
    assert cli.state("bombastic") == "Stopped"
    assert cli.state("ghost") is None
    assert fake_multipass.argvs[0] == [
        mp_bin,
        "info",
        "--format",
        "json",
        "--no-runtime-information",
        "--",
        "bombastic",
    ]


def test_info_existing_drops_instances_deleted_meanwhile(fake_multipass, mp_bin):
    def respond(argv):
        if "gone" in argv:
            return Reply(2, stderr='info failed: The following errors occurred:\ninstance "gone" does not exist\n')
        return Reply(stdout=fixture_text("info_multiple.json"))

    fake_multipass.responder = respond
    cli, _ = make_cli(fake_multipass, mp_bin)
    assert sorted(cli.info_existing(["bombastic", "gone"], runtime=False)) == ["bogus-instance", "bombastic"]
    assert fake_multipass.argvs[-1][-2:] == ["--", "bombastic"]


# --------------------------------------------------------------------------------------------------
# MultipassCLI for callers outside Ansible: existence, idempotent deletes, snapshots, version
# --------------------------------------------------------------------------------------------------

MISSING = 'The following errors occurred:\ninstance "{}" does not exist\n'


def test_exists(fake_multipass, mp_bin):
    fake_multipass.responder = lambda argv: (
        Reply(stdout=fixture_text("info_multiple.json"))
        if argv[-1] == "bombastic"
        else Reply(2, stderr="info failed: " + MISSING.format(argv[-1]))
    )
    cli, _ = make_cli(fake_multipass, mp_bin)
    assert cli.exists("bombastic") is True
    assert cli.exists("ghost") is False


@pytest.mark.parametrize(
    ("reply", "missing_ok", "outcome"),
    [
        (Reply(), False, True),
        (Reply(), True, True),
        (Reply(2, stderr="delete failed: " + MISSING.format("vm")), True, False),
        (Reply(2, stderr="delete failed: " + MISSING.format("vm")), False, mp.InstanceNotFoundError),
        # another instance's absence is not ours to ignore
        (Reply(2, stderr="delete failed: " + MISSING.format("other")), True, mp.InstanceNotFoundError),
        (Reply(2, stderr="delete failed: cannot connect to the multipass socket\n"), True, mp.DaemonUnavailableError),
    ],
)
def test_delete_missing_ok(fake_multipass, mp_bin, reply, missing_ok, outcome):
    fake_multipass.responder = lambda argv: reply
    cli, _ = make_cli(fake_multipass, mp_bin, retry=mp.RetryPolicy(retries=0))
    if isinstance(outcome, bool):
        assert cli.delete("vm", purge=True, missing_ok=missing_ok) is outcome
    else:
        with pytest.raises(outcome):
            cli.delete("vm", purge=True, missing_ok=missing_ok)
    assert fake_multipass.argvs == [[mp_bin, "delete", "--purge", "--", "vm"]]


@pytest.mark.parametrize(
    ("reply", "missing_ok", "outcome"),
    [
        (Reply(), False, True),
        (Reply(2, stderr="delete failed: No such snapshot: vm.s1\n"), True, False),
        (Reply(2, stderr="delete failed: No such snapshot: vm.s1\n"), False, mp.SnapshotNotFoundError),
        (Reply(2, stderr="delete failed: " + MISSING.format("vm")), True, False),
        (Reply(2, stderr="delete failed: Cannot delete snapshots of deleted instances: vm.s1\n"), True, mp.InstanceDeletedError),
    ],
)  # fmt: skip
def test_delete_snapshot(fake_multipass, mp_bin, reply, missing_ok, outcome):
    fake_multipass.responder = lambda argv: reply
    cli, _ = make_cli(fake_multipass, mp_bin)
    if isinstance(outcome, bool):
        assert cli.delete_snapshot("vm", "s1", missing_ok=missing_ok) is outcome
    else:
        with pytest.raises(outcome):
            cli.delete_snapshot("vm", "s1", missing_ok=missing_ok)
    assert fake_multipass.argvs == [[mp_bin, "delete", "--purge", "--", "vm.s1"]]


def test_snapshot_returns_the_name_multipass_gave(fake_multipass, mp_bin):
    fake_multipass.responder = lambda argv: Reply(stdout="Snapshot taken: vm.snapshot4\n")
    cli, _ = make_cli(fake_multipass, mp_bin)
    assert cli.snapshot("vm") == "snapshot4"
    assert cli.snapshot("vm", "sealed", "a comment") == "snapshot4"  # Multipass's word wins
    assert fake_multipass.argvs[1] == [mp_bin, "snapshot", "--name", "sealed", "--comment", "a comment", "--", "vm"]
    fake_multipass.responder = lambda argv: Reply()
    assert cli.snapshot("vm", "sealed") == "sealed"
    with pytest.raises(mp.MultipassParseError, match="did not say its name"):
        cli.snapshot("vm")


@pytest.mark.parametrize(
    ("stderr", "error"),
    [
        ("snapshot failed: Multipass can only take snapshots of stopped instances.\n", mp.InstanceStateError),
        ("snapshot failed: Snapshot already exists: vm.sealed\n", mp.AlreadyExistsError),
        ('snapshot failed: instance "vm" is being prepared\n', mp.InstanceBusyError),
    ],
)
def test_snapshot_failures_are_typed_and_never_repeated(fake_multipass, mp_bin, stderr, error):
    fake_multipass.responder = lambda argv: Reply(2, stderr=stderr)
    cli, sleeps = make_cli(fake_multipass, mp_bin)
    with pytest.raises(error) as raised:
        cli.snapshot("vm", "sealed")
    assert raised.value.message == stderr.strip()
    assert (len(fake_multipass.calls), sleeps) == (1, [])


@pytest.mark.parametrize(
    ("stderr", "error"),
    [
        ("restore failed: No such snapshot: vm.sealed\n", mp.SnapshotNotFoundError),
        ("restore failed: Multipass can only restore snapshots of stopped instances.\n", mp.InstanceStateError),
        ('restore failed: instance "vm" does not exist\n', mp.InstanceNotFoundError),
    ],
)
def test_restore_failures(fake_multipass, mp_bin, stderr, error):
    fake_multipass.responder = lambda argv: Reply(2, stderr=stderr)
    cli, _ = make_cli(fake_multipass, mp_bin)
    with pytest.raises(error):
        cli.restore("vm", "sealed")
    assert fake_multipass.argvs == [[mp_bin, "restore", "--destructive", "--", "vm.sealed"]]


def test_snapshots_of_one_instance(fake_multipass, mp_bin):
    fake_multipass.responder = lambda argv: Reply(stdout=fixture_text("info_with_snapshots.json"))
    cli, _ = make_cli(fake_multipass, mp_bin)
    assert sorted(cli.snapshots("bogus-instance")) == ["snapshot1", "snapshot2"]
    assert cli.snapshots("messier-87")["black-hole"]["comment"] == "Captured by EHT"
    fake_multipass.responder = lambda argv: Reply(stdout=fixture_text("info_empty.json"))
    assert cli.snapshots("bombastic") == {}  # an instance without snapshots is absent from the document
    fake_multipass.responder = lambda argv: Reply(2, stderr="info failed: " + MISSING.format("ghost"))
    with pytest.raises(mp.InstanceNotFoundError):
        cli.snapshots("ghost")
    assert fake_multipass.argvs[0] == [mp_bin, "info", "--snapshots", "--format", "json", "--", "bogus-instance"]


def test_snapshots_existing_drops_instances_deleted_meanwhile(fake_multipass, mp_bin):
    def respond(argv):
        if "gone" in argv:
            return Reply(2, stderr="info failed: " + MISSING.format("gone"))
        return Reply(stdout=fixture_text("info_with_snapshots.json"))

    fake_multipass.responder = respond
    cli, _ = make_cli(fake_multipass, mp_bin)
    found = cli.snapshots_existing(["messier-87", "gone", "bombastic"])
    assert sorted(found) == ["bombastic", "messier-87"]
    assert found["bombastic"] == {}
    assert fake_multipass.argvs[-1][-3:] == ["--", "messier-87", "bombastic"]


def test_all_snapshots_and_version(fake_multipass, mp_bin):
    fake_multipass.responder = lambda argv: Reply(
        stdout=fixture_text("list_snapshots.json" if argv[1] == "list" else "version_daemon.json")
    )
    cli, _ = make_cli(fake_multipass, mp_bin)
    assert sorted(cli.all_snapshots()["hale-roller"]) == ["pristine", "rocking", "rolling"]
    assert cli.version()["multipassd"] == "Daemon version"
    assert fake_multipass.argvs == [
        [mp_bin, "list", "--snapshots", "--format", "json"],
        [mp_bin, "version", "--format", "json"],
    ]
