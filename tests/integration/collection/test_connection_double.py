"""The connection plugin against the Multipass double, each check with pipelining on and off."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from it_helpers import PIPELINING, PLAYBOOKS, output, write_hosts

pytestmark = pytest.mark.double

BIG = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 50 MB binary file (every byte value, pseudo-random) plus its SHA-1 and size for the playbook."""
    folder = tmp_path_factory.mktemp("big")
    path = folder / "big.bin"
    with path.open("wb") as handle:
        for _ in range(BIG // (1024 * 1024)):
            handle.write(os.urandom(1024 * 1024))
    data = path.read_bytes()
    (folder / "big.sha1").write_text(hashlib.sha1(data).hexdigest())
    (folder / "big.size").write_text(str(len(data)))
    return path


@pytest.mark.parametrize("alias", PIPELINING)
def test_ping(ansible, hosts, instance, alias):
    proc = ansible("ansible", f"{instance}-{alias}", "-i", str(hosts), "-m", "ansible.builtin.ping", "-vvv")
    assert proc.returncode == 0, output(proc)
    assert "pong" in proc.stdout
    # Pipelining is really on (module fed on stdin) or off (module transferred with put_file first).
    transferred = [line for line in proc.stdout.splitlines() if line.lstrip().startswith("<") and "PUT " in line]
    assert bool(transferred) == (alias == "nopipelining"), output(proc)


@pytest.mark.slow
@pytest.mark.parametrize("alias", PIPELINING)
def test_posix_playbook(ansible, hosts, instance, alias, big_file):
    """command, shell, copy and fetch of 50 MB, odd file names, become, exit status 4 (see the playbook)."""
    local_dir = big_file.parent
    proc = ansible(
        "ansible-playbook",
        "-i", str(hosts),
        "--limit", f"{instance}-{alias}",
        "-e", f"local_dir={local_dir}",
        str(PLAYBOOKS / "connection_posix.yml"),
    )  # fmt: skip
    assert proc.returncode == 0, output(proc)
    fetched = local_dir / f"fetched {instance}-{alias}" / "ünïcode copy.bin"
    assert fetched.read_bytes() == big_file.read_bytes()  # byte for byte
    assert [p.name for p in fetched.parent.iterdir()] == [fetched.name]  # no partial file left


@pytest.mark.parametrize("alias", PIPELINING)
def test_stopped_instance_is_unreachable_and_not_started(ansible, own_instance, instance_state, trace, tmp_path, alias):
    name = own_instance(stopped=True)
    inventory = write_hosts(tmp_path / "hosts.ini", name)
    proc = ansible("ansible", f"{name}-{alias}", "-i", str(inventory), "-m", "ansible.builtin.ping", env=trace.env)
    assert proc.returncode == 4, output(proc)  # 4: one or more hosts unreachable
    assert "UNREACHABLE!" in proc.stdout
    assert f"multipass instance '{name}' is Stopped; refusing to start it" in proc.stdout
    assert instance_state(name) == "Stopped"
    assert trace.commands() == ["info"]  # neither start nor exec was called

    allowed = ansible(
        "ansible", f"{name}-{alias}", "-i", str(inventory), "-m", "ansible.builtin.ping",
        "-e", "ansible_multipass_allow_start=true",
    )  # fmt: skip
    assert allowed.returncode == 0, output(allowed)
    assert instance_state(name) == "Running"


@pytest.mark.parametrize("alias", PIPELINING)
def test_missing_instance_is_unreachable(ansible, tmp_path, alias):
    inventory = write_hosts(tmp_path / "hosts.ini", "no-such-instance")
    proc = ansible("ansible", f"no-such-instance-{alias}", "-i", str(inventory), "-m", "ansible.builtin.ping")
    assert proc.returncode == 4, output(proc)
    assert "UNREACHABLE!" in proc.stdout
    assert 'instance "no-such-instance" does not exist' in proc.stdout


@pytest.mark.parametrize("alias", PIPELINING)
def test_instance_deleted_between_tasks_is_unreachable(ansible, own_instance, tmp_path, alias):
    name = own_instance()
    inventory = write_hosts(tmp_path / "hosts.ini", name)
    playbook = tmp_path / "delete_midway.yml"
    playbook.write_text(
        "- name: Lose the instance between two tasks\n"
        "  hosts: all\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - ansible.builtin.command: 'true'\n"
        "      changed_when: false\n"
        "    - agentvm.multipass.instance:\n"
        "        name: '{{ ansible_host }}'\n"
        "        state: absent\n"
        "      delegate_to: localhost\n"
        "    - ansible.builtin.command: 'true'\n"
    )
    proc = ansible("ansible-playbook", "-i", str(inventory), "--limit", f"{name}-{alias}", str(playbook))
    assert proc.returncode == 4, output(proc)
    assert "UNREACHABLE!" in proc.stdout
    assert f'instance "{name}" does not exist' in proc.stdout
    assert "ok=2    changed=1    unreachable=1" in proc.stdout  # the delete ran; the third task could not
