"""This host's kernel and nft accept the rules (root): the probe ``make doctor`` shows, and a dry run of a run's
complete script. Nothing is loaded. Marked ``double``: ``make test-unit`` deselects these; a full run where they
cannot run fails with the reason."""

from __future__ import annotations

import subprocess

import pytest

from agentvm.host import egress
from agentvm.host.egress import RunRules
from tests.integration.isolation.conftest import require_root_network

pytestmark = pytest.mark.double
RULES = RunRules("20261121t221500-3f9c1a", "10.7.8.23", "10.7.8.1", (40001, 40002), "mpd0123abcd", "vb-run-3f9c")


@pytest.fixture(autouse=True)
def _root():
    require_root_network()


def test_probe_says_enforcement_is_possible_here():
    result = egress.probe()
    assert result.ok, result.problems
    assert result.nft_version
    assert "can be enforced" in result.summary()


def test_the_kernel_accepts_the_rendered_script():
    """``nft --check``: the text is valid nftables for this kernel; nothing is loaded."""
    proc = subprocess.run(
        ["nft", "--check", "-f", "-"],
        input=egress.render(RULES, table="agentvm_unitcheck"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert "agentvm_unitcheck" not in listed


def test_the_kernel_refuses_a_broken_script():
    """The dry run can fail: a rule with a bad address is refused (so the check above means something)."""
    broken = egress.render(RULES, table="agentvm_unitcheck").replace("ip saddr 10.7.8.23", "ip saddr 10.7.8.300")
    proc = subprocess.run(["nft", "--check", "-f", "-"], input=broken, capture_output=True, text=True, check=False)
    assert proc.returncode != 0
