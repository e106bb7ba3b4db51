"""A failed golden build names its step, deletes its builder and leaves the previous golden intact;
the provisioning role is idempotent (a second converge changes nothing)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.integration.conftest import REPO

pytestmark = [pytest.mark.double, pytest.mark.slow]

PLAYBOOK = str(REPO / ".venv" / "bin" / "ansible-playbook")


def playbook(golden, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = dict(golden.env, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    return subprocess.run(
        [PLAYBOOK, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def instance_names(golden) -> list[str]:
    return [i["name"] for i in json.loads(golden.multipass("list", "--format", "json").stdout)["list"]]


def assert_failed_cleanly(golden, proc: subprocess.CompletedProcess, step: str, before: dict) -> None:
    out = " ".join((proc.stdout + proc.stderr).split())  # the callback folds long messages
    assert proc.returncode != 0, out[-3000:]
    assert f"Golden build failed in step '{step}'" in out, out[-3000:]
    assert "deleted" in out and f"The current golden {golden.name} was not changed" in out
    assert [n for n in instance_names(golden) if "-golden-" in n] == [], instance_names(golden)
    after = golden.info()
    assert after["state"] == "Stopped"
    assert after["snapshots"]["sealed"]["comment"] == before["snapshots"]["sealed"]["comment"]


def test_cloud_init_failure_names_the_step_and_keeps_the_golden(golden):
    before = golden.info()
    extra = json.dumps({"golden_image_force": True, "golden_image_cloud_init_extra": {"runcmd": [["false"]]}})
    proc = playbook(golden, "playbooks/golden.yml", "-e", extra)
    assert_failed_cleanly(golden, proc, "Cloud-init", before)
    # cloud-init's own status detail and logs are in the error.
    assert re.search(r"status: error|runcmd|scripts-user", proc.stdout), proc.stdout[-3000:]


def test_provisioning_failure_names_the_step_and_keeps_the_golden(golden):
    before = golden.info()
    extra = json.dumps({"golden_image_force": True, "golden_provision_fail_step": "packages"})
    proc = playbook(golden, "playbooks/golden.yml", "-e", extra)
    assert_failed_cleanly(golden, proc, "Packages", before)
    assert "Injected failure in step 'packages'" in proc.stdout


def test_second_converge_of_golden_provision_changes_nothing(golden):
    name = golden.clone()
    try:
        agents = golden.env.get("AGENTS", "claude")  # converge with the agents the golden was built with
        proc = playbook(
            golden,
            "-i",
            f"{name},",
            "-e",
            f"golden_provision_agents={agents}",
            "tests/integration/golden/playbooks/converge.yml",
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        recap = re.search(rf"{re.escape(name)}\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", out)
        assert recap, out[-3000:]
        task, changed = "", []
        for line in out.splitlines():
            task = line if line.startswith("TASK [") else task
            if line.startswith("changed:"):
                changed.append(f"{task} {line}")
        assert recap.group(1) == "0", changed
    finally:
        golden.multipass("delete", "--purge", name)
