"""ansible-doc renders every part of the collection (DOCUMENTATION/EXAMPLES/RETURN parse and validate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

PARTS = [
    ("connection", "agentvm.multipass.multipass", {"allow_start", "command_timeout", "pipelining", "remote_addr"}),
    ("inventory", "agentvm.multipass.multipass", {"name_prefix", "states", "compose", "keyed_groups", "cache"}),
    ("module", "agentvm.multipass.instance", {"name", "state", "source", "stop_source", "purge", "cloud_init"}),
    ("module", "agentvm.multipass.instance_info", {"name", "runtime_information", "snapshots"}),
    ("module", "agentvm.multipass.snapshot", {"instance", "name", "state", "comment", "timeout", "retries"}),
]


@pytest.mark.parametrize(("kind", "name", "options"), PARTS, ids=[f"{p[0]}:{p[1]}" for p in PARTS])
def test_ansible_doc_renders(kind, name, options):
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    ansible_doc = str(Path(sys.executable).parent / "ansible-doc")
    proc = subprocess.run(
        [ansible_doc, "-t", kind, "--json", name], env=env, cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)[name]
    assert options <= set(doc["doc"]["options"])
    assert doc["examples"].strip()
    if kind == "module":
        assert doc["return"]
        assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    text = subprocess.run(
        [ansible_doc, "-t", kind, name], env=env, cwd=REPO, capture_output=True, text=True, check=False
    )
    assert text.returncode == 0, text.stderr
