"""What the VM says is a claim: coerced or ignored with a warning; the host's clock decides time-outs."""

from __future__ import annotations

import json

import pytest

from agentvm.errors import Status
from agentvm.run import claims, outcome
from agentvm.run.parsers import Parsed


def write(folder, name, content):
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize(
    ("summary", "exit_code", "present", "warned"),
    [
        ('{"exit_code": 0, "seconds": 1.5}', 0, True, False),
        ('{"exit_code": 7}', 7, True, False),
        ('{"exit_code": "0"}', None, True, True),
        ('{"exit_code": true}', None, True, True),
        ('{"exit_code": 1e9}', None, True, True),
        ('{"exit_code": 99999}', None, True, True),
        ("[1]", None, False, True),
        ('"text"', None, False, True),
        ("not json {", None, False, True),
        ("[" * 100000, None, False, True),
    ],
)
def test_the_summary_is_coerced(tmp_path, summary, exit_code, present, warned):
    write(tmp_path, "agent-summary.json", summary)
    said = claims.read(tmp_path)
    assert (said.exit_code, said.summary_present, bool(said.warnings)) == (exit_code, present, warned)


def test_oversized_claims_are_ignored(tmp_path):
    write(tmp_path, "agent-summary.json", json.dumps({"exit_code": 0, "pad": "x" * 100_000}))
    write(tmp_path, "agent_version", "v" * 100_000)
    said = claims.read(tmp_path)
    assert not said.summary_present and said.agent_version is None
    assert [w["code"] for w in said.warnings] == ["claim_too_large", "claim_too_large"]


@pytest.mark.parametrize(("text", "commits"), [("3\n", 3), ("0", 0), ("many", None), ("-1", None), ("١", None)])  # noqa: RUF001 - an Arabic-Indic digit, on purpose
def test_the_commit_count(tmp_path, text, commits):
    write(tmp_path, "commits", text)
    assert claims.read(tmp_path).commits == commits


def test_the_agent_version_is_one_clean_line(tmp_path):
    write(tmp_path, "agent_version", "\x1b]0;pwned\x07 2.1.330 (Claude Code)\nsecond line")
    assert claims.read(tmp_path).agent_version == "\\x1b]0;pwned\\x07 2.1.330 (Claude Code)"


def test_a_symlinked_claim_is_not_followed(tmp_path):
    tmp_path.joinpath("secret").write_text('{"exit_code": 0}')
    tmp_path.joinpath("agent-summary.json").symlink_to(tmp_path / "secret")
    assert not claims.read(tmp_path).summary_present


def facts(**kw):
    base = dict(
        instance="p-run-x", golden="p-golden", timeout=60, playbook_ok=True, interrupted=False, failed_phase=None,
        failure="", agent_seconds=5.0, teardown_error=None, kept=False,
    )  # fmt: skip
    base.update(kw)
    return outcome.Facts(**base)


def said(exit_code=0, present=True):
    return claims.Claims(exit_code=exit_code, summary_present=present)


@pytest.mark.parametrize(
    ("f", "c", "p", "status", "phase"),
    [
        (facts(), said(), Parsed(), None, None),
        (facts(), said(7), Parsed(), Status.AGENT_FAILED, "agent"),
        (facts(), said(None), Parsed(), Status.AGENT_FAILED, "agent"),
        (facts(), said(0), Parsed(is_error=True, error="HTTP 500"), Status.AGENT_FAILED, "agent"),
        # the host's clock, not the VM's word: a forged exit 0 after a time-out is still a time-out
        (facts(agent_seconds=61.0), said(0), Parsed(), Status.TIMED_OUT, "agent"),
        (facts(agent_seconds=61.0, playbook_ok=False, failed_phase="agent"), said(None, False), Parsed(), Status.TIMED_OUT, "agent"),
        (facts(playbook_ok=False, failed_phase="clone", failure="boom", agent_seconds=None), said(None, False), Parsed(), Status.INFRA_FAILED, "clone"),
        (facts(), said(None, False), Parsed(), Status.INFRA_FAILED, "fetch"),
        (facts(interrupted=True, failed_phase="agent"), said(), Parsed(), Status.INTERRUPTED, "agent"),
        (facts(teardown_error="daemon down"), said(), Parsed(), Status.INFRA_FAILED, "teardown"),
        (facts(teardown_error="daemon down"), said(3), Parsed(), Status.AGENT_FAILED, "agent"),
    ],
)  # fmt: skip
def test_outcome_rules(f, c, p, status, phase):
    error = outcome.decide(f, c, p)
    if status is None:
        assert error is None
    else:
        assert (error.status, error.phase) == (status, phase)
        assert error.hint and error.message


def test_a_failed_teardown_says_the_exact_command():
    error = outcome.decide(facts(teardown_error="timed out"), said(3), Parsed())
    assert "multipass delete --purge p-run-x" in error.hint
    error = outcome.decide(facts(teardown_error="timed out"), said(0), Parsed())
    assert "multipass delete --purge p-run-x" in error.hint and "timed out" in error.message
    assert "HTTP 500" in outcome.decide(facts(), said(1), Parsed(is_error=True, error="HTTP 500")).message
