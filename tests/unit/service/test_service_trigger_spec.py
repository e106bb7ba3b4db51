"""trigger_spec: the run request every trigger (schedule, webhook route, MCP call) builds, from data only."""

from __future__ import annotations

import pytest

from agentvm.errors import UsageError
from agentvm.service.submitcli import trigger_spec

TRIGGER = {"kind": "webhook", "name": "alerts", "id": "d-1"}


def test_options_become_the_spec_and_the_prompt_is_kept_byte_for_byte():
    prompt = b"{{ lookup('pipe', 'id') }} $(touch /tmp/x) \xff"
    spec = trigger_spec(
        prompt,
        {"agent": "custom", "agent_command": "cat", "timeout": 60, "label": {"team": "ops"}, "keep": "yes"},
        {},
        TRIGGER,
    )
    assert spec.prompt == prompt
    assert (spec.agent, spec.agent_command, spec.timeout, spec.keep) == ("custom", "cat", 60, True)
    assert spec.labels == {"team": "ops"}
    assert spec.trigger == TRIGGER


def test_the_environment_prompt_is_never_used():
    spec = trigger_spec(b"from the trigger", {}, {"PROMPT": "from the environment", "AGENT": "codex"}, TRIGGER)
    assert spec.prompt == b"from the trigger"
    assert spec.agent == "codex"  # other settings still come from the environment, as for `agentvm submit`


@pytest.mark.parametrize(
    ("prompt", "options", "message"),
    [
        (b"x", {"bogus": 1}, "unknown run option"),
        (b"x", {"timeout": "soon"}, "TIMEOUT must be a positive whole number"),
        (b"x", {"timeout": -5}, "TIMEOUT must be a positive whole number"),
        (b"x", {"label": "a=b"}, "takes a list of KEY=VALUE"),
        (b"x", {"label": ["NOT VALID=1"]}, "label name"),
        (b"x", {"agent": ["claude"]}, "takes a string or a number"),
        (b"x", {"agent": True}, "takes a string or a number"),
        (b"x", {"keep": "maybe"}, "keep must be 1, true or yes"),
        (b"x", {"agent": "nope"}, "nope"),
        (b"x", {"workspace": "https://user:pw@example.invalid/r.git"}, "carries credentials"),
        (b"   ", {}, "the prompt is empty"),
        (b"x" * (1024 * 1024 + 1), {}, "at most 1048576"),
    ],
)
def test_bad_options_are_refused(prompt, options, message):
    with pytest.raises(UsageError, match=message):
        trigger_spec(prompt, options, {}, TRIGGER)
