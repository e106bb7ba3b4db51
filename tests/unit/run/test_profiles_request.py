"""Agent profiles and the validation of a run's inputs (every error of build_request), without VMs."""

from __future__ import annotations

import io

import pytest

from agentvm.errors import UsageError
from agentvm.multipass import Golden
from agentvm.options import RunInput
from agentvm.run.profiles import ARGV_PROMPT_LIMIT, get_profile, load_profiles
from agentvm.run.request import MAX_PROMPT_BYTES, build_request
from agentvm.settings import Settings


@pytest.mark.parametrize(
    ("agent", "model", "turns", "expected"),
    [
        ("claude", None, None, ["claude", "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "bypassPermissions"]),
        ("claude", "opus", 3, ["claude", "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "bypassPermissions", "--max-turns=3", "--model=opus"]),
        ("claude", "{{ lookup('pipe','id') }}", None, ["claude", "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "bypassPermissions", "--model={{ lookup('pipe','id') }}"]),
    ],
)  # fmt: skip
def test_profile_command(agent, model, turns, expected):
    assert get_profile(agent).command("/vm/prompt.txt", b"hi", model, turns) == expected


def test_custom_command_is_split_never_run_by_a_shell():
    profile = get_profile("custom", "tool --in {prompt_file} '$(id)' \"{model}\" {prompt}")
    assert profile.command("/vm/p", b"x {model}", "m$(id)", None) == ["tool", "--in", "/vm/p", "$(id)", "m$(id)"]
    assert profile.credentials == ()


def test_argv_prompt_agents_get_the_prompt_as_one_argument():
    profile = get_profile("crush")
    argv = profile.command("/vm/p", b"a $(touch x) `id` {model}\nb", None, None)
    assert argv[-1] == "a $(touch x) `id` {model}\nb"


def test_every_profile_is_complete():
    for name, data in load_profiles().items():
        assert {"binary", "prompt", "argv", "output", "credentials"} <= set(data), name
        assert data["prompt"] in ("stdin", "argv") and data["output"] in (
            "claude_stream_json", "gemini_stream_json", "gemini_json", "codex_jsonl", "opencode_jsonl", "text"
        )  # fmt: skip


class FakeMultipass:
    def __init__(self, golden: Golden) -> None:
        self._golden = golden

    def golden(self, name: str) -> Golden:
        return self._golden


COMPLETE = Golden("agentvm-golden", "Stopped", {"build_id": "b1"})


def request(env=None, inp=None, golden=COMPLETE, stdin=None):
    settings = Settings.load({"MULTIPASS_BIN": "/bin/true", **(env or {})})
    return build_request(settings, inp or RunInput(prompt=b"hi", agent="custom", agent_command="cat"),
                         stdin=stdin, mp=FakeMultipass(golden))  # fmt: skip


def test_a_valid_request(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    req = request(
        {"ANTHROPIC_API_KEY": "sk-1", "ANTHROPIC_AUTH_TOKEN": "tok", "ANTHROPIC_BASE_URL": "http://x"},
        RunInput(prompt=b"hi", agent="claude", workspace=str(tmp_path), timeout=60),
    )
    assert req.secrets == {"ANTHROPIC_API_KEY": "sk-1"}  # only the one the agent needs
    assert req.passthrough == {}  # the proxy gives the VM its own base URL
    assert (req.credentials_mode, req.egress.mode) == ("proxy", "deny")
    direct = request(
        {"ANTHROPIC_API_KEY": "sk-1", "ANTHROPIC_BASE_URL": "http://x", "CREDENTIALS": "direct"},
        RunInput(prompt=b"hi", agent="claude", credentials="direct", egress="open"),
    )
    assert direct.passthrough == {"ANTHROPIC_BASE_URL": "http://x"} and direct.egress.mode == "open"
    assert (req.timeout, req.golden_manifest_id, req.workspace.files) == (60, "b1", ("a.txt",))
    assert req.instance == f"agentvm-run-{req.run_id}"


@pytest.mark.parametrize(
    ("inp", "env", "golden", "message"),
    [
        (RunInput(agent="custom", agent_command="cat"), {}, COMPLETE, "the prompt is empty"),
        (RunInput(prompt=b"  \n", agent="custom", agent_command="cat"), {}, COMPLETE, "the prompt is empty"),
        (RunInput(prompt=b"x", prompt_file="/p", agent="custom", agent_command="cat"), {}, COMPLETE, "either PROMPT or PROMPT_FILE"),
        (RunInput(prompt_file="/definitely/missing", agent="custom", agent_command="cat"), {}, COMPLETE, "cannot read PROMPT_FILE"),
        (RunInput(prompt=b"x" * (MAX_PROMPT_BYTES + 1), agent="custom", agent_command="cat"), {}, COMPLETE, "the limit is"),
        (RunInput(prompt=b"x", agent="nope"), {}, COMPLETE, "unknown agent 'nope'"),
        (RunInput(prompt=b"x", agent="custom"), {}, COMPLETE, "AGENT=custom needs AGENT_COMMAND"),
        (RunInput(prompt=b"x", agent="custom", agent_command="a 'b"), {}, COMPLETE, "cannot be split"),
        (RunInput(prompt=b"x" * (ARGV_PROMPT_LIMIT + 1), agent="crush"), {"OPENAI_API_KEY": "k"}, COMPLETE, "as an argument"),
        (RunInput(prompt=b"x", agent="claude"), {}, COMPLETE, "needs ANTHROPIC_API_KEY"),
        (RunInput(prompt=b"x", agent="custom", agent_command="cat", workspace="/definitely/missing"), {}, COMPLETE, "is not a folder"),
        (RunInput(prompt=b"x", agent="custom", agent_command="cat", credentials="maybe"), {}, COMPLETE, "CREDENTIALS='maybe' is not valid"),
        (RunInput(prompt=b"x", agent="custom", agent_command="cat", egress="*"), {}, COMPLETE, "use EGRESS=open"),
        (RunInput(prompt=b"x", agent="custom", agent_command="cat", egress="a b"), {}, COMPLETE, "EGRESS: "),
        (RunInput(prompt=b"x", agent="custom", agent_command="cat"), {}, Golden("agentvm-golden", None, None), "no golden VM"),
        (RunInput(prompt=b"x", agent="custom", agent_command="cat"), {}, Golden("agentvm-golden", "Deleted", None), "is deleted"),
        (RunInput(prompt=b"x", agent="custom", agent_command="cat"), {}, Golden("agentvm-golden", "Stopped", None), "no `sealed` snapshot"),
    ],
)  # fmt: skip
def test_every_usage_error(inp, env, golden, message):
    with pytest.raises(UsageError, match=message):
        request(env, inp, golden)


def test_prompt_file_and_stdin_are_read_up_to_the_limit_plus_one(tmp_path):
    with pytest.raises(UsageError, match="PROMPT_FILE /dev/zero has more than"):
        request(inp=RunInput(prompt_file="/dev/zero", agent="custom", agent_command="cat"))
    with pytest.raises(UsageError, match="on stdin has more than"):
        request(inp=RunInput(agent="custom", agent_command="cat"), stdin=io.BytesIO(b"x" * (MAX_PROMPT_BYTES + 5)))
    assert request(inp=RunInput(agent="custom", agent_command="cat"), stdin=io.BytesIO(b"piped")).prompt == b"piped"


def test_workspace_limits_are_checked_before_anything_is_created(tmp_path):
    for i in range(5):
        (tmp_path / f"f{i}").write_bytes(b"x" * 1024)
    with pytest.raises(UsageError, match=r"more than 3 files \(AGENTVM_WORKSPACE_MAX_FILES"):
        request(
            {"AGENTVM_WORKSPACE_MAX_FILES": "3"},
            RunInput(prompt=b"x", agent="custom", agent_command="cat", workspace=str(tmp_path)),
        )
    (tmp_path / "big").write_bytes(b"x" * (2 * 1024 * 1024))
    with pytest.raises(UsageError, match="limit 1 MiB, AGENTVM_WORKSPACE_MAX_MB"):
        request(
            {"AGENTVM_WORKSPACE_MAX_MB": "1"},
            RunInput(prompt=b"x", agent="custom", agent_command="cat", workspace=str(tmp_path)),
        )
