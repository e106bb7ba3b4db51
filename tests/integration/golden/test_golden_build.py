"""`make golden` against the Multipass double: the golden, its manifest, the no-op rebuild, verify, clones.

The golden is built once per session by the ``golden`` fixture (tests/integration/conftest.py).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.double, pytest.mark.slow]

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
    "exec",
    "transfer",
    "mount",
    "umount",
    "set",
}


def test_golden_is_stopped_with_a_sealed_snapshot_carrying_the_manifest(golden):
    info = golden.info()
    assert info["state"] == "Stopped"
    assert "sealed" in info["snapshots"]
    comment = json.loads(info["snapshots"]["sealed"]["comment"])
    assert comment == golden.manifest
    assert comment["golden"] == golden.name
    assert re.fullmatch(r"[0-9a-f]{64}", comment["inputs_sha256"])
    assert comment["agents"]["claude"]["version"] in comment["agents_reported"]["claude"]
    for tool in ("node", "python3", "uv", "git", "podman", "black", "isort", "flake8", "mypy", "pytest", "jq"):
        assert comment["tools"][tool], tool
    # No builder or verify clone is left over.
    names = json.loads(golden.multipass("list", "--format", "json").stdout)["list"]
    assert [i["name"] for i in names if "-golden-" in i["name"]] == []


def test_second_make_golden_is_a_fast_no_op(golden, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    trace = tmp_path / "trace.jsonl"
    started = time.monotonic()
    proc = golden.make("golden", env={"MULTIPASS_DOUBLE_TRACE": str(trace)})
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is up to date" in proc.stdout
    # A figure, not an assertion (speed is measured, never asserted): the bound is 10 s.
    with capsys.disabled():
        print(f"\nno-op `make golden`: {seconds:.1f} s")
    calls = [json.loads(line)["argv"] for line in trace.read_text().splitlines()]
    commands = [next((a for a in argv[1:] if not a.startswith("-")), "") for argv in calls]
    assert not MUTATING & set(commands), commands


def test_verify_golden_passes(golden):
    proc = golden.make("verify-golden")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    assert "Verified a clone of " + golden.name in proc.stdout
    names = json.loads(golden.multipass("list", "--format", "json").stdout)["list"]
    assert [i["name"] for i in names if "-golden-verify-" in i["name"]] == []


@pytest.fixture(scope="module")
def two_clones(golden):
    names = [golden.clone(), golden.clone()]
    yield names
    golden.multipass("delete", "--purge", *names)


def sh(golden, name: str, command: str) -> str:
    proc = golden.multipass("exec", name, "--", "bash", "-lc", command)
    assert proc.returncode == 0, f"{command}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def test_claude_answers_version_as_ubuntu_in_a_clone(golden, two_clones):
    out = sh(golden, two_clones[0], "id -un; claude --version </dev/null")
    user, version = out.strip().splitlines()[:2]
    assert user == "ubuntu"
    assert golden.manifest["agents"]["claude"]["version"] in version
    env = sh(golden, two_clones[0], "env")
    assert "DISABLE_AUTOUPDATER=1" in env
    assert "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1" in env


def test_clones_get_their_own_machine_id_and_ssh_host_keys(golden, two_clones):
    ids = [sh(golden, n, "cat /etc/machine-id").strip() for n in two_clones]
    keys = [sh(golden, n, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1] for n in two_clones]
    for machine_id in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", machine_id)
    assert ids[0] != ids[1]
    assert keys[0] != keys[1]
    # The golden itself was sealed with an empty machine-id and no host keys (recorded before it was stopped):
    # a clone's identity therefore cannot be the golden's.
    assert golden.manifest["build_id"]


def test_no_api_key_from_the_build_environment_in_the_golden(golden, two_clones):
    proc = golden.multipass(
        "exec",
        two_clones[0],
        "--",
        "sudo",
        "grep",
        "-rIl",
        "--exclude-dir=proc",
        "--exclude-dir=sys",
        golden.secret_marker,
        "/home",
        "/root",
        "/etc",
        "/opt",
        "/usr/local",
        "/var",
        "/tmp",
    )
    assert proc.returncode == 1, f"marker found or grep failed: {proc.stdout}{proc.stderr}"
    assert proc.stdout == ""


def test_workspace_and_output_belong_to_ubuntu(golden, two_clones):
    out = sh(golden, two_clones[1], "stat -c '%U %n' ~/workspace ~/output")
    assert out.split() == ["ubuntu", "/home/ubuntu/workspace", "ubuntu", "/home/ubuntu/output"]
