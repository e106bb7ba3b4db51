"""examples/kestra/agentvm.yml against a JSON Schema subset written here, its command against agentvm's real CLI,
and the rule that payload text reaches the task only through inputFiles."""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentvm.service import cli, naming, submitcli
from tests.unit.examples.lint import ROOT, lint_problems, load

SCHEMA = json.loads((ROOT / "tests/unit/fixtures/kestra-flow.schema.json").read_text(encoding="utf-8"))
FLOW = "kestra/agentvm.yml"
COMMANDS = "io.kestra.plugin.scripts.shell.Commands"
EXPRESSION = re.compile(r"\{\{(.*?)\}\}|\{%", re.S)
SHELL_OPERATORS = {";", "&", "&&", "|", "||", ">", ">>", "<", "<<", "(", ")"}


def _flow() -> dict[str, Any]:
    return load(FLOW)


def _errors(flow: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(flow)]


def _shell_tasks(flow: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for task in flow.get("tasks", []) + flow.get("errors", []):
        if task.get("type") == COMMANDS:
            yield task


def test_schema_is_valid_and_the_flow_lints_and_validates() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert lint_problems(FLOW) == []
    assert _errors(_flow()) == []


def test_flow_has_the_building_blocks() -> None:
    flow = _flow()
    assert {t["type"] for t in flow["triggers"]} == {
        "io.kestra.plugin.core.trigger.Webhook",
        "io.kestra.plugin.core.trigger.Schedule",
    }
    assert flow["concurrency"]["limit"] >= 1
    assert flow["errors"]
    (task,) = _shell_tasks(flow)
    assert task["taskRunner"]["type"] == "io.kestra.plugin.core.runner.Process"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(flow: dict[str, Any]) -> None:
        node: Any = flow
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(flow: dict[str, Any]) -> None:
        node: Any = flow
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return change


BAD_FLOWS = [
    ("missing namespace", _drop("namespace")),
    ("missing tasks", _drop("tasks")),
    ("no tasks at all", _set("tasks", [])),
    ("namespace with a space", _set("namespace", "agents agentvm")),
    ("unknown trigger type", _set("triggers.0.type", "io.kestra.plugin.core.trigger.Flow")),
    ("webhook without key", _drop("triggers.0.key")),
    ("webhook key too short to be a secret", _set("triggers.0.key", "abc")),
    ("schedule without cron", _drop("triggers.1.cron")),
    ("schedule with a bad cron", _set("triggers.1.cron", "every morning")),
    ("misspelt trigger property", _set("triggers.1.crn", "0 6 * * *")),
    ("bad concurrency behavior", _set("concurrency.behavior", "DROP")),
    ("concurrency limit zero", _set("concurrency.limit", 0)),
    ("concurrency without limit", _drop("concurrency.limit")),
    ("task without id", _drop("tasks.0.id")),
    ("task id with a dot", _set("tasks.0.id", "submit.run")),
    ("task without type", _drop("tasks.0.type")),
    ("task type not a plugin class", _set("tasks.0.type", "shell")),
    ("shell task without commands", _drop("tasks.0.commands")),
    ("inputFiles value not text", _set("tasks.0.inputFiles", {"prompt.txt": ["a"]})),
    ("task timeout not a duration", _set("tasks.0.timeout", "2 hours")),
    ("errors task without id", _drop("errors.0.id")),
    ("log task without message", _drop("errors.0.message")),
    ("misspelt flow key", _set("trigger", [])),
]


@pytest.mark.parametrize(("case", "change"), BAD_FLOWS, ids=[c for c, _ in BAD_FLOWS])
def test_schema_refuses(case: str, change: Callable[[dict[str, Any]], None]) -> None:
    flow = copy.deepcopy(_flow())
    change(flow)
    assert _errors(flow), f"the schema accepted a flow with {case}"


def _argv(command: str) -> list[str]:
    """The words of one shell command line up to its first operator (a redirection, a pipe, `;`)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    for word in lexer:
        if word in SHELL_OPERATORS:
            break
        words.append(word)
    return words


def _strings(node: Any, where: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*where, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, (*where, str(i)))
    elif isinstance(node, str):
        yield where, node


def _unsafe(flow: dict[str, Any]) -> list[str]:
    """Where the flow could splice text into a shell or spill the payload. Kestra renders {{ }} before the shell
    runs, so any expression in a shell task's text (commands, beforeCommands, ...) outside inputFiles and env is
    refused; an expression of the payload (trigger.*) is allowed in inputFiles only: not in the environment
    (the run options are the flow's), not in a log message."""
    found = []
    for task in _shell_tasks(flow):
        for key, value in task.items():
            if key not in ("inputFiles", "env") and any(EXPRESSION.search(t) for _, t in _strings(value)):
                found.append(f"expression in {task['id']}.{key}")
    for where, text in _strings(flow):
        payload = any("trigger" in expr for expr in EXPRESSION.findall(text))
        if payload and not (len(where) == 4 and where[0] == "tasks" and where[2] == "inputFiles"):
            found.append(f"payload expression at {'.'.join(where)}")
    return found


def test_no_expression_in_shell_text_and_payload_only_in_input_files() -> None:
    assert _unsafe(_flow()) == []


UNSAFE_FLOWS = [
    ("payload in the command", "tasks.0.commands", ['agentvm submit --wait "{{ trigger.body.prompt }}"']),
    ("input in the command", "tasks.0.commands", ["agentvm submit --wait --agent {{ inputs.agent }}"]),
    ("pebble tag in the command", "tasks.0.commands", ["{% if true %}agentvm submit --wait{% endif %}"]),
    ("payload in beforeCommands", "tasks.0.beforeCommands", ["echo {{ trigger.body }}"]),
    ("payload in the environment", "tasks.0.env", {"AGENT": "{{ trigger.body.agent }}"}),
    ("payload in the error log", "errors.0.message", "failed on {{ trigger.body }}"),
]


@pytest.mark.parametrize(("case", "path", "value"), UNSAFE_FLOWS, ids=[c for c, _, _ in UNSAFE_FLOWS])
def test_unsafe_flows_are_caught(case: str, path: str, value: Any) -> None:
    flow = copy.deepcopy(_flow())
    _set(path, value)(flow)
    assert _unsafe(flow), f"not caught: {case}"


def _agentvm_commands() -> list[tuple[dict[str, Any], list[str]]]:
    found = []
    for task in _shell_tasks(_flow()):
        for command in task["commands"]:
            argv = _argv(command)
            if argv and argv[0] == "agentvm":
                found.append((task, argv))
    return found


def _render(text: str, flow: dict[str, Any], execution_id: str) -> str:
    """Kestra's rendering of the few expressions the task's environment may use (inputs and the execution id);
    any other expression fails the test."""
    defaults = {i["id"]: i["defaults"] for i in flow["inputs"]}

    def value(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        if expr == "execution.id":
            return execution_id
        name = expr.removeprefix("inputs.")
        assert name != expr and name in defaults, f"unexpected expression {expr!r} in the environment"
        return str(defaults[name])

    return re.sub(r"\{\{(.*?)\}\}", value, text)


def test_agentvm_command_parses_with_the_real_cli() -> None:
    commands = _agentvm_commands()
    assert commands, "the flow calls agentvm"
    for task, argv in commands:
        args = cli.parser().parse_args(argv[1:])  # argparse exits (SystemExit) on an unknown flag
        assert args.command == "submit" and args.wait
        assert args.prompt is None, "the prompt comes from a file, never the command line"
        assert Path(args.prompt_file).name in task["inputFiles"]


def test_agentvm_command_builds_a_valid_run_request(tmp_path: Path) -> None:
    """The command plus the task's environment, as Kestra would render it, is a run request agentvm accepts."""
    flow = _flow()
    ((task, argv),) = _agentvm_commands()
    args = cli.parser().parse_args(argv[1:])
    (tmp_path / "prompt.txt").write_text("a prompt with $(touch canary) and {{ 7*7 }}", encoding="utf-8")
    env = {k: _render(v, flow, "4wjtkzwVGBM9yKnjm3yv8r") for k, v in task["env"].items()}
    env["WORKING_DIR"] = str(tmp_path)
    args.prompt_file = args.prompt_file.replace("$WORKING_DIR", str(tmp_path))
    cli._make_variables(args, env)
    spec = submitcli.build_spec(args, env)
    assert spec.agent == env["AGENT"] and spec.timeout == int(env["TIMEOUT"])
    assert naming.workflow_id(args.key, "r") == env["KEY"]
    assert not (tmp_path / "canary").exists()
