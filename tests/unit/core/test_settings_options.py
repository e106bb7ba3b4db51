"""Settings and run options: one integer parser, one boolean parser, errors naming the variable."""

from __future__ import annotations

import argparse

import pytest

from agentvm import options
from agentvm.errors import UsageError
from agentvm.settings import Settings, parse_bool, parse_int, role_defaults


@pytest.mark.parametrize(
    ("raw", "minimum", "expected"),
    [(None, 1, 7), ("", 1, 7), ("1", 1, 1), ("0042", 1, 42), ("0", 0, 0), ("7200", 1, 7200)],
)
def test_parse_int_accepts_ascii_digits(raw, minimum, expected):
    assert parse_int("X", raw, 7, minimum=minimum) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "+1", " 1", "1 ", "1.5", "1e3", "²", "٣", "１", "ten", "0x10"])  # noqa: RUF001 - other scripts' digits, on purpose
def test_parse_int_refuses_everything_else(raw):
    with pytest.raises(UsageError, match=r"^TIMEOUT must be a positive whole number"):
        parse_int("TIMEOUT", raw, 1800)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, False), ("", False), ("0", False), ("no", False), ("false", False), ("1", True), ("yes", True),
     ("TRUE", True), (" true ", True)],
)  # fmt: skip
def test_parse_bool(raw, expected):
    assert parse_bool("KEEP", raw) is expected


@pytest.mark.parametrize("raw", ["on", "y", "2", "yes please", "$(shell id)"])
def test_parse_bool_refuses_other_values(raw):
    with pytest.raises(UsageError, match="KEEP must be 1, true or yes"):
        parse_bool("KEEP", raw)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAX_VMS": "²"}, "MAX_VMS must be a positive whole number"),
        ({"AGENTVM_QUEUE_TIMEOUT": "soon"}, "AGENTVM_QUEUE_TIMEOUT must be"),
        ({"AGENTVM_RETRIES": "-1"}, "AGENTVM_RETRIES must be a whole number"),
        ({"AGENTVM_MAX_RESULT_MB": "0"}, "AGENTVM_MAX_RESULT_MB must be a positive"),
        ({"AGENTVM_WORKSPACE_MAX_MB": "1GB"}, "AGENTVM_WORKSPACE_MAX_MB"),
        ({"AGENTVM_REAP": "maybe"}, "AGENTVM_REAP must be 1, true or yes"),
        ({"AGENTVM_GOLDEN_MAX_AGE_DAYS": "x"}, "AGENTVM_GOLDEN_MAX_AGE_DAYS"),
        ({"ALERT_ATTEMPTS": "0"}, "ALERT_ATTEMPTS"),
        ({"AGENTVM_PREFIX": "bad_prefix"}, "AGENTVM_PREFIX 'bad_prefix' must be"),
        ({"AGENTVM_PREFIX": "{{ lookup('pipe','id') }}"}, "AGENTVM_PREFIX"),
    ],
)
def test_bad_settings_are_usage_errors_naming_the_variable(env, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        Settings.load(env)


def test_defaults_come_from_the_roles():
    s = Settings.load({})
    assert s.default_timeout == role_defaults("agent_run")["agent_run_timeout"]
    assert (s.retries, s.retry_delay, s.vm_timeout) == (
        role_defaults("run_vm")["run_vm_retries"],
        role_defaults("run_vm")["run_vm_retry_delay"],
        role_defaults("run_vm")["run_vm_timeout"],
    )
    assert s.max_result_bytes == 1024 * 1024 * 1024 and s.prefix == "agentvm" and s.golden == "agentvm-golden"


def test_run_options_from_the_environment_and_flags():
    env = {"AGENT": "codex", "TIMEOUT": "900", "KEEP": "yes", "PROMPT": "from env", "MODEL": "{{ x }}"}
    base = options.from_env(env)
    assert (base.agent, base.timeout, base.keep, base.prompt, base.model) == (
        "codex",
        900,
        True,
        b"from env",
        "{{ x }}",
    )
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    flags = options.from_args(parser.parse_args(["--timeout", "60", "--label", "team=ops"]))
    merged = flags.over(base)
    assert (merged.agent, merged.timeout, merged.keep, merged.labels) == ("codex", 60, True, {"team": "ops"})
    file_prompt = options.RunInput(prompt_file="/x").over(base)
    assert (file_prompt.prompt, file_prompt.prompt_file) == (None, "/x")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"prompt": "x", "colour": "red"}, "unknown key 'colour'"),
        ({"prompt": ["x"]}, "prompt must be text"),
        ({"prompt": "x", "timeout": "²"}, "TIMEOUT .--timeout. must be a positive whole number"),
        ({"prompt": "x", "timeout": True}, "TIMEOUT .--timeout. must be a positive whole number"),
        ({"prompt": "x", "keep": "maybe"}, "KEEP .--keep. must be 1, true or yes"),
        ({"prompt": "x", "model": {"a": 1}}, "MODEL .--model. must be text"),
        ({"prompt": "x", "labels": {"Bad Key": "v"}}, "label 'Bad Key'"),
        ({"prompt": "x", "labels": ["a"]}, "labels must be a mapping"),
    ],
)
def test_mapping_inputs_are_checked(data, message):
    with pytest.raises(UsageError, match=message):
        options.from_mapping(data, "item 3")


def test_mapping_inputs_are_data():
    inp = options.from_mapping({"prompt": "{{ lookup('pipe','id') }}", "timeout": 60, "keep": True}, "item")
    assert (inp.prompt, inp.timeout, inp.keep) == (b"{{ lookup('pipe','id') }}", 60, True)
