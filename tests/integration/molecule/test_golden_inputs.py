"""The roles' Molecule scenarios are tests, not build inputs of the golden: editing roles/*/molecule/ leaves the
plan's inputs hash as it is (no 20-minute rebuild), while editing the role itself still changes it.

The plan (golden_image plan.yml, read-only) runs on a copy of the build inputs (golden_image_repo_dir), so the
repository is never modified.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.double

INPUTS = ["cloud-init", "roles/golden_image", "roles/golden_provision", "playbooks/golden.yml"]


def plan_inputs(env: dict[str, str], repo_copy: Path, out: Path) -> str:
    extra = json.dumps({"plan_out": str(out), "golden_image_repo_dir": str(repo_copy)})
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-playbook"), "tests/integration/golden/playbooks/plan.yml", "-e", extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    return json.loads(out.read_text())["inputs"]


def test_molecule_scenarios_are_not_build_inputs(double_env, tmp_path):
    env = dict(double_env, AGENTVM_PREFIX="h" + uuid.uuid4().hex[:6], ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    copy = tmp_path / "repo"
    for rel in INPUTS:
        src, dst = REPO / rel, copy / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    before = plan_inputs(env, copy, tmp_path / "1.json")

    scenario = copy / "roles" / "golden_provision" / "molecule" / "default"
    (scenario / "verify.yml").write_text((scenario / "verify.yml").read_text() + "# edited\n")
    (scenario / "new-scenario-file.yml").write_text("---\n")
    assert plan_inputs(env, copy, tmp_path / "2.json") == before

    tasks = copy / "roles" / "golden_provision" / "tasks" / "main.yml"
    tasks.write_text(tasks.read_text() + "# edited\n")
    assert plan_inputs(env, copy, tmp_path / "3.json") != before
