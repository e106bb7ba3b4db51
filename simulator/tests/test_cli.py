"""The double's CLI against Multipass 1.16.3's texts and literals, with real instances.

The error texts come from the client commands (``src/client/cli/cmd/<command>.cpp``), the argument parser
(``src/client/cli/argparser.cpp``) and the daemon (``src/daemon/daemon.cpp``) of Multipass at v1.16.3; the
JSON literals are those of its ``tests/test_output_formatter.cpp`` (``fixtures/README.md``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from simulator.pytest_plugin import MultipassFn
from tests.conftest import DOUBLE_ADMIN, DOUBLE_BIN, REPO

pytestmark = pytest.mark.double
LITERALS = Path(__file__).parent / "fixtures" / "formatter"
Run = Callable[..., subprocess.CompletedProcess]


def literal(name: str) -> str:
    return (LITERALS / f"{name}.txt").read_text()


@pytest.fixture(scope="module")
def empty_double(double_env: dict[str, str]) -> Iterator[Run]:
    """A second, empty data folder (no instances) sharing the machine's image cache; removed afterwards."""
    env = dict(double_env)
    data = REPO / ".cache" / f"test-empty-{uuid.uuid4().hex[:8]}"
    env["MULTIPASS_DOUBLE_DATA"] = str(data)

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(DOUBLE_BIN), *args], input=input, capture_output=True, text=True, env=env, timeout=120, check=False
        )

    yield run
    subprocess.run(
        [sys.executable, str(DOUBLE_ADMIN), "down", "--data", str(data), "--purge", "--quiet"], check=False, timeout=300
    )


def test_version_json_matches_literal(multipass: MultipassFn) -> None:
    proc = multipass("version", "--format", "json")
    expected = (
        literal("json_version_daemon_no_updates")
        .replace("Client version", "1.16.3")
        .replace("Daemon version", "1.16.3")
    )
    assert (proc.returncode, proc.stdout) == (0, expected)


def test_empty_list_and_info_match_literals(empty_double: Run) -> None:
    assert empty_double("list", "--format", "json").stdout == literal("json_list_empty")
    assert empty_double("info", "--format", "json").stdout == literal("json_info_empty")
    assert empty_double("list").stdout == "No instances found.\n"


# (argv, exit code, exact stderr); exit codes are ReturnCode (include/multipass/cli/return_codes.h).
ERROR_CASES = [
    (["info", "nope"], 2, 'info failed: The following errors occurred:\ninstance "nope" does not exist\n'),
    (["stop", "nope"], 2, 'stop failed: The following errors occurred:\ninstance "nope" does not exist\n'),
    (["delete", "nope"], 2, 'delete failed: The following errors occurred:\ninstance "nope" does not exist\n'),
    (["recover", "nope"], 2, 'recover failed: The following errors occurred:\ninstance "nope" does not exist\n'),
    (["restart", "nope"], 2, 'restart failed: The following errors occurred:\ninstance "nope" does not exist\n'),
    (
        ["exec", "-n", "nope", "--", "true"],  # without -n/-d it is printed twice (test_fidelity.py)
        2,
        'exec failed: The following errors occurred:\ninstance "nope" does not exist\n',
    ),
    (
        ["transfer", "nope:x", "-"],
        2,
        'transfer failed: The following errors occurred:\ninstance "nope" does not exist\n',
    ),
    (["start", "nope"], 2, "start failed: instance(s) missing\nInstance 'nope' does not exist.\n\n"),
    (["clone", "nope"], 2, 'clone failed: instance "nope" does not exist\n'),
    (["snapshot", "nope"], 2, 'snapshot failed: instance "nope" does not exist\n'),
    (["restore", "nope.snapshot1"], 2, 'restore failed: instance "nope" does not exist\n'),
    (
        ["launch", "--name", "1nvalid-name"],
        2,
        "launch failed: Invalid arguments supplied\nInvalid instance name supplied: 1nvalid-name\n",
    ),
    (
        ["launch", "--name", "invalid-name-"],
        2,
        "launch failed: Invalid arguments supplied\nInvalid instance name supplied: invalid-name-\n",
    ),
    (
        ["launch", "--memory", "64M"],
        2,
        "launch failed: Invalid arguments supplied\nInvalid memory size value supplied: 64M.\n",
    ),
    (
        ["launch", "--disk", "100M"],
        2,
        "launch failed: Invalid arguments supplied\nInvalid disk size value supplied: 100M.\n",
    ),
    (["launch", "--cpus", "0"], 1, "Error: invalid CPU count '0', need a positive integer value.\n"),
    (["launch", "--timeout", "x"], 1, "error: --timeout value has to be a positive integer\n"),
    (
        ["launch", "--cloud-init", "/definitely/missing-file"],
        1,
        "Could not load cloud-init configuration: bad file: /definitely/missing-file\n"
        "Please ensure that Multipass can read it.\n",
    ),
    (["launch", "a", "b"], 1, "Too many arguments supplied\n"),
    (["launch", "foo:bar"], 1, "Invalid remote and source image name supplied\n"),
    (["clone"], 1, "Please provide the name of the source instance.\n"),
    (["clone", "a", "b"], 1, "Too many arguments.\n"),
    (
        ["restore", "nodot"],
        1,
        "Invalid format. Please specify the instance to restore and snapshot to use in the form "
        "<instance>.<snapshot>.\n",
    ),
    (["list", "extra"], 1, "This command takes no arguments\n"),
    (["list", "--format", "xml"], 1, "Invalid format type given.\n"),
    (
        ["list", "--snapshots", "--no-ipv4"],
        1,
        "IP addresses are not applicable in conjunction with listing snapshots\n",
    ),
    (["info", "--all", "a", "b"], 1, "Cannot specify names when --all option set\n"),
    (
        ["info", "a", "b.snap", "--format", "csv"],  # a client-side check: before the instances are looked up
        1,
        "Mixed snapshot and instance arguments are not supported with CSV format\n",
    ),
    (
        ["info", "a.snap", "nope"],
        2,
        'info failed: The following errors occurred:\ninstance "a" does not exist\ninstance "nope" does not exist\n',
    ),
    (
        ["find", "--only-images", "--only-blueprints"],
        1,
        'Specify one of "--only-images", "--only-blueprints" or omit to fetch both\n',
    ),
    (["find", "a", "b"], 1, "Wrong number of arguments\n"),
    (["purge", "x"], 1, "This command takes no arguments\n"),
    (["exec", "a"], 1, "Wrong number of arguments\n"),
    (
        ["exec", "a", "ls", "-la"],
        1,
        'Unknown options: l, a.\n\nOptions to the inner command should come after "--", like this:\n'
        "multipass exec <instance> -- <command>\n",
    ),
    (["transfer", "a"], 1, "Not enough arguments given\n"),
    (["transfer", "-", "-"], 1, "Only one '-' allowed\n"),
    (["transfer", "a:x", "b:y", "-"], 1, "Only two arguments allowed when using '-'\n"),
    (["transfer", "x", "-"], 1, "Source must be from inside an instance\n"),
    (["transfer", "-", "x"], 1, "Target must be inside an instance\n"),
    (["transfer", "x", "y"], 1, "An instance name is needed for either source or destination\n"),
    (["transfer", "a:x", "y", "z"], 1, "All sources must be from inside an instance\n"),
    (["transfer", "a:x", "b:y"], 1, "Cannot specify an instance name for both source and destination\n"),
    (["launch", "--name"], 1, "Missing value after '--name'.\n"),
    (["stop", "--time", "x", "nope"], 1, "Time must be in digit form\n"),
]


@pytest.mark.parametrize(("argv", "code", "stderr"), ERROR_CASES, ids=[" ".join(c[0]) for c in ERROR_CASES])
def test_error_texts_and_exit_codes(empty_double: Run, argv: list[str], code: int, stderr: str) -> None:
    proc = empty_double(*argv)
    assert (proc.returncode, proc.stderr, proc.stdout) == (code, stderr, "")


def test_unknown_command_and_no_arguments(empty_double: Run) -> None:
    proc = empty_double("frobnicate")
    expected = 'Error: Unknown command or alias \'frobnicate\' (try "multipass help" or "multipass aliases")\n'
    assert (proc.returncode, proc.stdout) == (1, expected)
    assert empty_double().returncode == 2


# -- a running instance ------------------------------------------------------------------------


def test_running_instance_refuses_clone_snapshot_and_duplicate_name(multipass: MultipassFn, instance: str) -> None:
    cases = [
        (["clone", instance], "clone failed: Multipass can only clone stopped instances.\n"),
        (["snapshot", instance], "snapshot failed: Multipass can only take snapshots of stopped instances.\n"),
        (["launch", "--name", instance], f'launch failed: instance "{instance}" already exists\n'),
        (["clone", instance, "--name", "bad.name"], "clone failed: Multipass can only clone stopped instances.\n"),
    ]
    for argv, stderr in cases:
        proc = multipass(*argv)
        assert (proc.returncode, proc.stderr) == (2, stderr), argv


def test_info_json_of_running_instance_has_the_literals_shape(multipass: MultipassFn, instance: str) -> None:
    proc = multipass("info", instance, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    reference = json.loads(literal("json_info_multiple_instances"))["info"]["bogus-instance"]
    entry = doc["info"][instance]
    assert doc["errors"] == []
    assert sorted(entry) == sorted(reference)
    for key, value in reference.items():
        assert type(entry[key]) is type(value), key
    assert entry["state"] == "Running"
    assert entry["cpu_count"] == "1" and entry["snapshot_count"] == "0"
    assert entry["memory"]["total"] == 1024**3 and isinstance(entry["memory"]["used"], int)
    assert entry["disks"]["sda1"]["total"] == str(5 * 1024**3)
    assert len(entry["load"]) == 3 and len(entry["image_hash"]) == 64
    assert entry["image_release"] == "24.04 LTS"


def test_instance_has_private_ipv4_with_reachable_sshd(multipass: MultipassFn, instance: str) -> None:
    info = json.loads(multipass("info", instance, "--format", "json").stdout)["info"][instance]
    address = info["ipv4"][0]
    first, second = (int(x) for x in address.split(".")[:2])
    assert first == 10 or (first == 172 and 16 <= second <= 31) or (first, second) == (192, 168)
    with socket.create_connection((address, 22), timeout=10) as conn:
        assert conn.recv(64).startswith(b"SSH-2.0-")
    listed = json.loads(multipass("list", "--format", "json").stdout)["list"]
    assert {"name": instance, "state": "Running", "ipv4": [address], "release": "Ubuntu 24.04 LTS"} in listed


def test_exec_runs_as_ubuntu_with_passwordless_sudo(multipass: MultipassFn, instance: str) -> None:
    assert multipass("exec", instance, "--", "id", "-un").stdout == "ubuntu\n"
    assert multipass("exec", instance, "--", "pwd").stdout == "/home/ubuntu\n"
    assert multipass("exec", instance, "--", "sudo", "-n", "id", "-u").stdout == "0\n"
    assert multipass("exec", instance, "--", "cat", "/etc/hostname").stdout == f"{instance}\n"


def test_exec_passes_arguments_literally_and_exit_codes_through(multipass: MultipassFn, instance: str) -> None:
    tricky = "a b; $(touch /tmp/pwned) `id` 'q' \"d\" é"
    assert multipass("exec", instance, "--", "printf", "%s", tricky).stdout == tricky
    assert multipass("exec", instance, "--", "test", "-e", "/tmp/pwned").returncode == 1
    assert multipass("exec", instance, "--", "sh", "-c", "exit 33").returncode == 33
    assert multipass("exec", instance, "--", "sh", "-c", "echo out; echo err >&2").stderr == "err\n"
    assert multipass("exec", instance, "--", "cat", input="from stdin").stdout == "from stdin"
    proc = multipass("exec", "-d", "/etc", instance, "--", "pwd")
    assert proc.stdout == "/etc\n"


def test_exec_remote_exit_4_reruns_the_command_like_multipass_1_16(multipass: MultipassFn, instance: str) -> None:
    script = "n=$(cat rc4-count 2>/dev/null || echo 0); n=$((n+1)); echo $n > rc4-count; [ $n -ge 3 ] || exit 4"
    multipass("exec", instance, "--", "rm", "-f", "rc4-count")
    assert multipass("exec", instance, "--", "sh", "-c", script).returncode == 0
    assert multipass("exec", instance, "--", "cat", "rc4-count").stdout == "3\n"


def test_transfer_both_directions_and_streams(multipass: MultipassFn, instance: str, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096
    source = tmp_path / "blob.bin"
    source.write_bytes(payload)
    source.chmod(0o640)
    assert multipass("transfer", str(source), f"{instance}:blob.bin").returncode == 0
    mode = multipass("exec", instance, "--", "stat", "-c", "%a %U", "/home/ubuntu/blob.bin").stdout
    assert mode == "640 ubuntu\n"
    back = tmp_path / "back.bin"
    assert multipass("transfer", f"{instance}:/home/ubuntu/blob.bin", str(back)).returncode == 0
    assert back.read_bytes() == payload
    proc = multipass("transfer", "-", f"{instance}:/tmp/streamed", input="streamed text ✓")
    assert proc.returncode == 0, proc.stderr
    assert multipass("transfer", f"{instance}:/tmp/streamed", "-").stdout == "streamed text ✓"


def test_transfer_sftp_errors(multipass: MultipassFn, instance: str, tmp_path: Path) -> None:
    proc = multipass("transfer", "-", f"{instance}:/root/forbidden", input="x")
    assert proc.returncode == 2
    assert proc.stderr == 'cannot open remote file "/root/forbidden": SFTP server: Permission denied\n'
    local = tmp_path / "f"
    local.write_text("x")
    proc = multipass("transfer", str(local), f"{instance}:/no/such/dir/f")
    assert proc.returncode == 2
    assert proc.stderr.endswith("[error] [sftp] remote target does not exist\n")
    assert multipass("transfer", "-p", str(local), f"{instance}:/tmp/deep/er/f").returncode == 0
    assert multipass("exec", instance, "--", "cat", "/tmp/deep/er/f").stdout == "x"
