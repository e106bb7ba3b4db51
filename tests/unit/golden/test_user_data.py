"""The builder's cloud-init user-data template renders to a minimal, valid #cloud-config document."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
RENDER = REPO / "tests" / "unit" / "golden" / "render_user_data.yml"


def render(tmp_path: Path, **extra_vars) -> str:
    dest = tmp_path / "user-data.yaml"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    env.pop("MULTIPASS_BIN", None)
    proc = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            "-i",
            "localhost,",
            str(RENDER),
            "-e",
            json.dumps({"user_data_dest": str(dest), **extra_vars}),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest.read_text()


@pytest.fixture(scope="module")
def default_user_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    return render(tmp_path_factory.mktemp("ud"))


def test_header_is_exactly_cloud_config(default_user_data: str):
    # A space ("# cloud-config") silently disables cloud-init (trailofbits/algo#14800).
    assert default_user_data.splitlines()[0] == "#cloud-config"


def test_default_user_data_is_minimal(default_user_data: str):
    data = yaml.safe_load(default_user_data)
    assert data["users"] == ["default"]
    assert data["ssh_pwauth"] is False
    assert data["package_update"] is False and data["package_upgrade"] is False
    # Clones rerun this user-data on first boot: nothing is installed here.
    assert not {"packages", "runcmd", "bootcmd", "apt"} & set(data)


def test_extra_user_data_is_merged(tmp_path: Path):
    text = render(tmp_path, golden_image_cloud_init_extra={"runcmd": [["false"]], "timezone": "Europe/Paris"})
    data = yaml.safe_load(text)
    assert data["runcmd"] == [["false"]]
    assert data["timezone"] == "Europe/Paris"
    assert data["users"] == ["default"]
