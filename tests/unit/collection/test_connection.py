"""Unit tests of the agentvm.multipass.multipass connection plugin (subprocess faked)."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest
from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import become_loader, connection_loader
from mp_fakes import FakeMultipass, Reply, fixture_text, route_cli_to

from ansible_collections.agentvm.multipass.plugins.connection import multipass as plugin

WRAPPER = plugin.EXIT4_WRAPPER


def info_reply(name: str, state: str) -> Reply:
    """``info --no-runtime-information`` of one instance, shaped like reference §3.3 (static fields only)."""
    text = fixture_text("info_multiple.json").replace('"bombastic"', f'"{name}"').replace('"Stopped"', f'"{state}"')
    return Reply(stdout=text)


@pytest.fixture
def fake(monkeypatch, mp_bin) -> FakeMultipass:
    """Every MultipassCLI the plugin creates uses the fake; instance "vm" is Running unless a test says otherwise."""
    fake = FakeMultipass()
    fake.state = "Running"  # type: ignore[attr-defined]

    def respond(argv):
        if argv[1] == "info":
            return info_reply(argv[-1], fake.state)  # type: ignore[attr-defined]
        return Reply()

    fake.responder = respond
    route_cli_to(fake, monkeypatch, mp_bin)
    return fake


def make_connection(**options) -> plugin.Connection:
    conn = connection_loader.get("agentvm.multipass.multipass", PlayContext())
    conn.set_options(direct={"remote_addr": "vm", **options})
    return conn


def exec_calls(fake: FakeMultipass):
    return [c for c in fake.calls if c.argv[1] == "exec"]


# --------------------------------------------------------------------------------------------------
# argv building
# --------------------------------------------------------------------------------------------------

SUDO_CMD = "/bin/sh -c 'sudo -H -S -n  -u root /bin/sh -c '\"'\"'echo BECOME-SUCCESS-abc ; /usr/bin/python3'\"'\"''"

EXEC_CASES = [
    # id, options, cmd, in_data, expected argv after the executable, expected stdin
    (
        "simple",
        {},
        "/bin/sh -c 'echo ~ && sleep 0'",
        None,
        [
            "exec", "--no-map-working-directory", "vm", "--",
            "/bin/sh", "-c", WRAPPER, "/bin/sh", "/bin/sh -c 'echo ~ && sleep 0'",
        ],
        subprocess.DEVNULL,
    ),
    (
        "pipelining feeds the module on stdin",
        {},
        "/bin/sh -c '/usr/bin/python3 && sleep 0'",
        b"#!/usr/bin/python3\nprint(1)\n",
        [
            "exec", "--no-map-working-directory", "vm", "--",
            "/bin/sh", "-c", WRAPPER, "/bin/sh", "/bin/sh -c '/usr/bin/python3 && sleep 0'",
        ],
        subprocess.PIPE,
    ),
    (
        "become command line passes through untouched",
        {},
        SUDO_CMD,
        b"module",
        ["exec", "--no-map-working-directory", "vm", "--", "/bin/sh", "-c", WRAPPER, "/bin/sh", SUDO_CMD],
        subprocess.PIPE,
    ),
    (
        "working directory",
        {"working_directory": "/srv/my dir"},
        "ls",
        None,
        ["exec", "--working-directory", "/srv/my dir", "vm", "--", "/bin/sh", "-c", WRAPPER, "/bin/sh", "ls"],
        subprocess.DEVNULL,
    ),
    (
        "other executable",
        {"executable": "/bin/bash"},
        "echo $0",
        None,
        ["exec", "--no-map-working-directory", "vm", "--", "/bin/bash", "-c", WRAPPER, "/bin/bash", "echo $0"],
        subprocess.DEVNULL,
    ),
    (
        "non-default remote user goes through sudo",
        {"remote_user": "agent"},
        "id -un",
        None,
        [
            "exec", "--no-map-working-directory", "vm", "--",
            "sudo", "-n", "-H", "-u", "agent", "--", "/bin/sh", "-c", WRAPPER, "/bin/sh", "id -un",
        ],
        subprocess.DEVNULL,
    ),
    (
        "spaces, quotes and non-ASCII stay one argument",
        {},
        "cat '/home/ubuntu/dir with space/naïve ☃.txt' \"$HOME\"",
        None,
        [
            "exec", "--no-map-working-directory", "vm", "--", "/bin/sh", "-c", WRAPPER, "/bin/sh",
            "cat '/home/ubuntu/dir with space/naïve ☃.txt' \"$HOME\"",
        ],
        subprocess.DEVNULL,
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("options", "cmd", "in_data", "expected", "stdin"),
    [c[1:] for c in EXEC_CASES],
    ids=[c[0] for c in EXEC_CASES],
)
def test_exec_argv(fake, mp_bin, options, cmd, in_data, expected, stdin):
    conn = make_connection(**options)
    rc, _, _ = conn.exec_command(cmd, in_data=in_data)
    assert rc == 0
    [call] = exec_calls(fake)
    assert call.argv == [mp_bin, *expected]
    assert call.stdin is stdin
    assert call.input == in_data


def test_exec_returns_remote_output_and_status(fake):
    fake.responder = lambda argv: info_reply("vm", "Running") if argv[1] == "info" else Reply(3, b"out\n", b"err\n")
    assert make_connection().exec_command("false") == (3, b"out\n", b"err\n")


def test_command_timeout_is_applied(fake):
    make_connection(command_timeout=42).exec_command("true")
    assert exec_calls(fake)[0].timeout == 42


def test_put_file_streams_through_transfer(fake, mp_bin, tmp_path):
    src = tmp_path / "in file"
    src.write_bytes(b"\x00\xffdata")
    make_connection().put_file(str(src), "/home/ubuntu/.ansible/tmp/dir with space/é.py")
    [call] = [c for c in fake.calls if c.argv[1] == "transfer"]
    assert call.argv == [mp_bin, "transfer", "-", "vm:/home/ubuntu/.ansible/tmp/dir with space/é.py"]
    assert call.input == b"\x00\xffdata"


def test_put_file_as_another_user_streams_through_exec(fake, mp_bin, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    make_connection(remote_user="agent").put_file(str(src), "/home/agent/f")
    [call] = exec_calls(fake)
    assert call.argv[call.argv.index("--") + 1 :] == [
        "sudo", "-n", "-u", "agent", "--", "/bin/sh", "-c", 'cat > "$1"', "sh", "/home/agent/f",
    ]  # fmt: skip
    assert call.input == b"abc"


def test_put_file_raises_on_failure(fake, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    fake.responder = lambda argv: (
        info_reply("vm", "Running")
        if argv[1] == "info"
        else Reply(2, stderr="[2026-05-19T10:00:00.000] [error] [sftp] remote target does not exist\n")
    )
    with pytest.raises(AnsibleError, match="remote target does not exist") as info:
        make_connection().put_file(str(src), "/nowhere/f")
    assert not isinstance(info.value, AnsibleConnectionFailure)


def test_put_file_into_a_stopped_instance_is_unreachable(fake, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    fake.responder = lambda argv: (
        info_reply("vm", "Running")
        if argv[1] == "info"
        else Reply(2, stderr='transfer failed: instance "vm" is not running\n')
    )
    with pytest.raises(AnsibleConnectionFailure, match="is not running"):
        make_connection().put_file(str(src), "/home/ubuntu/f")


def test_put_file_missing_source(fake, tmp_path):
    with pytest.raises(AnsibleFileNotFound):
        make_connection().put_file(str(tmp_path / "nope"), "/home/ubuntu/f")


def test_fetch_file_streams_to_the_destination(fake, mp_bin, tmp_path):
    fake.responder = lambda argv: info_reply("vm", "Running") if argv[1] == "info" else Reply(stdout=b"\x00remote\xff")
    dest = tmp_path / "out dir" / "ü.bin"
    dest.parent.mkdir()
    make_connection().fetch_file("/home/ubuntu/ü.bin", str(dest))
    [call] = [c for c in fake.calls if c.argv[1] == "transfer"]
    assert call.argv == [mp_bin, "transfer", "vm:/home/ubuntu/ü.bin", "-"]
    assert call.stdin is subprocess.DEVNULL
    assert dest.read_bytes() == b"\x00remote\xff"
    assert os.listdir(dest.parent) == ["ü.bin"]


def test_fetch_file_failure_leaves_nothing_behind(fake, tmp_path):
    fake.responder = lambda argv: (
        info_reply("vm", "Running")
        if argv[1] == "info"
        else Reply(2, stdout=b"partial", stderr="[2026-05-19T10:00:00.000] [error] [sftp] cannot open remote file\n")
    )
    dest = tmp_path / "fetched" / "f"
    dest.parent.mkdir()
    with pytest.raises(AnsibleError, match="cannot open remote file"):
        make_connection().fetch_file("/root/secret", str(dest))
    assert list(dest.parent.iterdir()) == []


def test_fetch_file_as_another_user(fake, tmp_path):
    fake.responder = lambda argv: info_reply("vm", "Running") if argv[1] == "info" else Reply(stdout=b"abc")
    dest = tmp_path / "f"
    make_connection(remote_user="agent").fetch_file("/home/agent/f", str(dest))
    [call] = exec_calls(fake)
    assert call.argv[call.argv.index("--") + 1 :] == ["sudo", "-n", "-u", "agent", "--", "cat", "--", "/home/agent/f"]
    assert dest.read_bytes() == b"abc"


# --------------------------------------------------------------------------------------------------
# State check and error mapping
# --------------------------------------------------------------------------------------------------


def test_state_is_read_without_runtime_information(fake, mp_bin):
    make_connection().exec_command("true")
    assert fake.argvs[0] == [mp_bin, "info", "--format", "json", "--no-runtime-information", "--", "vm"]
    assert fake.subcommands() == ["info", "exec"]


@pytest.mark.parametrize("state", ["Stopped", "Suspended"])
def test_stopped_instance_is_refused_without_starting_it(fake, state):
    fake.state = state
    with pytest.raises(AnsibleConnectionFailure, match=f"is {state}; refusing to start it"):
        make_connection().exec_command("true")
    assert fake.subcommands() == ["info"]


def test_allow_start_starts_explicitly(fake, mp_bin):
    fake.state = "Stopped"
    make_connection(allow_start=True, start_timeout=99).exec_command("true")
    assert fake.subcommands() == ["info", "start", "exec"]
    assert fake.argvs[1] == [mp_bin, "start", "--timeout", "99", "--", "vm"]


@pytest.mark.parametrize("state", ["Deleted", "Unknown", "Suspending"])
def test_unusable_states_are_unreachable(fake, state):
    fake.state = state
    with pytest.raises(AnsibleConnectionFailure, match=f"is {state}"):
        make_connection(allow_start=True).exec_command("true")
    assert fake.subcommands() == ["info"]


@pytest.mark.parametrize(
    ("stderr", "match"),
    [
        ('info failed: The following errors occurred:\ninstance "vm" does not exist\n', 'instance "vm" does not exist'),
        ("info failed: cannot connect to the multipass socket\n", "cannot connect to the multipass socket"),
        ("info failed: multipass socket access denied\n", "access denied"),
    ],
)
def test_missing_instance_and_daemon_errors_are_unreachable(fake, stderr, match):
    fake.responder = lambda argv: Reply(2, stderr=stderr)
    with pytest.raises(AnsibleConnectionFailure, match=match):
        make_connection().exec_command("true")
    assert "exec" not in fake.subcommands()


def test_missing_multipass_is_unreachable(monkeypatch, tmp_path):
    monkeypatch.setenv("MULTIPASS_BIN", str(tmp_path / "nope"))
    with pytest.raises(AnsibleConnectionFailure, match="does not exist or is not executable"):
        make_connection().exec_command("true")


@pytest.mark.parametrize(
    "stderr",
    [
        'exec failed: The following errors occurred:\ninstance "vm" is deleted\n',
        "exec failed: ssh connection failed: 'Failed to connect: No route to host'\n",
        "exec failed: Cannot retrieve credentials in unknown state\n",
    ],
)
def test_multipass_side_exec_failures_are_unreachable(fake, stderr):
    fake.responder = lambda argv: info_reply("vm", "Running") if argv[1] == "info" else Reply(2, stderr=stderr)
    with pytest.raises(AnsibleConnectionFailure, match=stderr.splitlines()[-1].strip()[-20:]):
        make_connection(retries=1).exec_command("true")


def test_exec_timeout_is_unreachable(fake):
    fake.responder = lambda argv: info_reply("vm", "Running") if argv[1] == "info" else Reply(hang=True)
    with pytest.raises(AnsibleConnectionFailure, match="did not finish within 5 seconds"):
        make_connection(command_timeout=5).exec_command("sleep 100")
    assert exec_calls(fake)[0].killed


def test_become_password_prompts_are_refused(fake):
    conn = make_connection()
    become = become_loader.get("ansible.builtin.sudo")
    become.set_options(direct={"become_pass": "secret"})
    become.build_become_command("true", conn._shell)
    conn.set_become_plugin(become)
    with pytest.raises(AnsibleError, match="cannot answer become password prompts"):
        conn.exec_command("true")


def test_pipelining_is_supported_and_on_by_default(fake):
    conn = make_connection()
    assert conn.has_pipelining is True
    assert conn.get_option("pipelining") is True


# --------------------------------------------------------------------------------------------------
# The remote exit status 4 guard (Multipass <= 1.16.3 re-runs commands that exit 4, reference §2.5)
# --------------------------------------------------------------------------------------------------


def run_wrapped_locally(cmd: str) -> tuple[int, bytes, bytes]:
    """Run the exact argv the plugin sends, with a local /bin/sh standing in for the remote login shell."""
    argv = plugin.build_remote_command(cmd, "/bin/sh")
    proc = subprocess.run(argv, capture_output=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize(
    ("cmd", "rc", "stdout", "stderr"),
    [
        ("exit 4", 4, b"", b""),
        ("echo out; echo err >&2; exit 4", 4, b"out\n", b"err\n"),
        ("exit 0", 0, b"", b""),
        ("exit 3", 3, b"", b""),
        ("exit 104", 104, b"", b""),  # a genuine 104 is not mistaken for 4
        ("echo err >&2; exit 104", 104, b"", b"err\n"),
        ("printf 'no newline' >&2; exit 4", 4, b"", b"no newline"),
        ("exit 255", 255, b"", b""),
        ("echo \"$0 $1\" 'a b'", 0, b"/bin/sh  a b\n", b""),
    ],
)
def test_exit_status_4_never_reaches_multipass_and_is_restored(cmd, rc, stdout, stderr):
    raw_rc, raw_out, raw_err = run_wrapped_locally(cmd)
    assert raw_rc != 4  # what multipass exec would see
    decoded_rc, decoded_err = plugin.decode_exit_status(raw_rc, raw_err)
    assert (decoded_rc, raw_out) == (rc, stdout)
    assert decoded_err == stderr


@pytest.mark.parametrize(
    "stderr",
    [b"prefix " + plugin.EXIT4_MARKER + b"\n", plugin.EXIT4_MARKER + b"\n", b"\n" + plugin.EXIT4_MARKER],
)
def test_marker_without_the_exact_suffix_is_not_ours(stderr):
    assert plugin.decode_exit_status(104, stderr) == (104, stderr)


def test_suffix_with_another_code_is_left_alone():
    stderr = b"x" + plugin.EXIT4_SUFFIX
    assert plugin.decode_exit_status(1, stderr) == (1, stderr)


def test_exec_command_restores_status_4(fake):
    marker = plugin.EXIT4_SUFFIX
    fake.responder = lambda argv: (
        info_reply("vm", "Running") if argv[1] == "info" else Reply(plugin.EXIT4_CODE, b"inactive\n", b"x\n" + marker)
    )
    assert make_connection().exec_command("systemctl is-active fake") == (4, b"inactive\n", b"x\n")


def test_wrapper_is_quotable_like_multipass_does():
    """Multipass shell-escapes every argument; the wrapper must survive a round trip through a shell."""
    argv = plugin.build_remote_command("exit 4", "/bin/sh")
    line = " ".join(shlex.quote(a) for a in argv)
    proc = subprocess.run(["/bin/bash", "-c", line], capture_output=True, check=False)
    assert plugin.decode_exit_status(proc.returncode, proc.stderr)[0] == 4


def test_docs_are_valid():
    import yaml

    for text in (plugin.DOCUMENTATION, plugin.EXAMPLES):
        assert yaml.safe_load(text)
