"""The service's run request: prompt encoding, git URL and ref checks, labels, host pins, naming. No server."""

from __future__ import annotations

import base64

import pytest

from agentvm.errors import UsageError
from agentvm.service import naming
from agentvm.service.spec import (
    MAX_PROMPT_BYTES,
    RunSpec,
    check_git_url,
    check_ref,
    encode_prompt,
    parse_labels,
    validate,
)


def spec(**kw) -> RunSpec:
    return RunSpec(prompt_b64=base64.b64encode(b"do it").decode(), **kw)


def test_prompt_round_trips_as_bytes():
    data = "naïve $(rm -rf /) `x` {{ jinja }}\n\x00".encode()
    assert RunSpec(prompt_b64=encode_prompt(data)).prompt == data


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty"), (b" \n\t", "empty"), (b"x" * (MAX_PROMPT_BYTES + 1), "at most 1048576")],
)
def test_bad_prompts(data, message):
    with pytest.raises(UsageError, match=message):
        encode_prompt(data)


def test_prompt_that_is_not_base64_is_refused_by_the_worker_check():
    with pytest.raises(UsageError, match="base64"):
        validate(RunSpec(prompt_b64="not base64!"))


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/org/repo.git",
        "ssh://git@example.org/org/repo.git",
        "ssh://git@example.org:2222/repo",
        "file:///srv/git/repo.git",
    ],
)
def test_accepted_git_urls(url):
    assert check_git_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.org/repo.git", "must start with https://"),
        ("git://example.org/repo.git", "must start with https://"),
        ("ext::sh%20-c%20touch%20/tmp/pwned", "must start with https://"),
        ("git@example.org:org/repo.git", "must start with https://"),
        ("--upload-pack=touch /tmp/x", "one line without spaces"),
        ("https://example.org/repo.git --upload-pack=x", "one line without spaces"),
        ("https://example.org/repo\n.git", "one line without spaces"),
        ("https://token@example.org/repo.git", "credentials"),
        ("https://user:secret@example.org/repo.git", "credentials"),
        ("ssh://git:secret@example.org/repo.git", "credentials"),
        ("file://host/srv/repo", "file:///absolute/path"),
        ("file:relative", "file:///absolute/path"),
        ("https:///repo.git", "names no host"),
        ("https://example.org/", "names no repository"),
        ("https://example.org/" + "a" * 2100, "at most 2048"),
    ],
)
def test_refused_git_urls(url, message):
    with pytest.raises(UsageError, match=message):
        check_git_url(url)


@pytest.mark.parametrize("ref", ["main", "v1.2.3", "feature/x-y", "0123456789abcdef0123456789abcdef01234567"])
def test_accepted_refs(ref):
    assert check_ref(ref) == ref


@pytest.mark.parametrize(
    "ref", ["-b", "--upload-pack=x", "a..b", "a//b", "x@{1}", "main.lock", "dir/", "a b", "", "a\\b", "ref\n"]
)
def test_refused_refs(ref):
    with pytest.raises(UsageError, match="not a branch, tag or commit"):
        check_ref(ref)


def test_labels():
    assert parse_labels(["team=infra", "ticket=ABC-1", "note=a=b"]) == {
        "team": "infra",
        "ticket": "ABC-1",
        "note": "a=b",
    }
    for bad, message in [
        (["novalue"], "key=value"),
        (["Team=x"], "label name"),
        (["t=\x1b[31m"], "printable"),
        ([f"k{i}=v" for i in range(33)], "at most 32"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_labels(bad)


def test_workspace_folder_needs_a_host_pin():
    with pytest.raises(UsageError, match="pin the run there with --host"):
        validate(spec(workspace_path="/srv/project"))
    assert validate(spec(workspace_path="/srv/project", host="hosta")).host == "hosta"
    with pytest.raises(UsageError, match="absolute path"):
        validate(spec(workspace_path="project", host="hosta"))


def test_workspace_git_and_ref_rules():
    assert validate(spec(workspace_git="https://example.org/r.git", workspace_ref="main")).workspace_ref == "main"
    with pytest.raises(UsageError, match="--ref needs a workspace given as a git URL"):
        validate(spec(workspace_ref="main"))
    with pytest.raises(UsageError, match="either as a git URL or as a folder"):
        validate(spec(workspace_git="https://example.org/r.git", workspace_path="/x", host="h"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"timeout": 0}, "TIMEOUT"),
        ({"timeout": -5}, "TIMEOUT"),
        ({"max_turns": True}, "MAX_TURNS"),
        ({"attempts": 0}, "attempts"),
        ({"attempts": 21}, "at most 20"),
        ({"heartbeat_timeout": 0}, "heartbeat"),
        ({"host": "-evil"}, "host"),
        ({"host": "a b"}, "host"),
    ],
)
def test_bad_numbers_and_hosts(fields, message):
    with pytest.raises(UsageError, match=message):
        validate(spec(**fields))


def test_queue_and_host_names():
    assert naming.task_queue({}) == "agentvm"
    assert naming.task_queue({"AGENTVM_TASK_QUEUE": "team-a"}) == "team-a"
    assert naming.host_queue("agentvm", "hosta") == "agentvm@hosta"
    assert naming.host_name({"AGENTVM_HOST": "builder-2"}) == "builder-2"
    assert naming.host_name({})  # the machine's name, made safe
    for bad in ("a b", "-x", "x" * 101, "q@h"):
        with pytest.raises(UsageError):
            naming.task_queue({"AGENTVM_TASK_QUEUE": bad})
    for bad in ("a b", "x.", "-x", "x" * 64, "h@q"):
        with pytest.raises(UsageError):
            naming.host_name({"AGENTVM_HOST": bad})


def test_workflow_ids_come_from_the_key_or_a_run_id():
    assert naming.workflow_id(None, "20261121t221500-3f9c1a") == "20261121t221500-3f9c1a"
    assert naming.workflow_id("ci/build-42:lint", "ignored") == "ci/build-42:lint"
    for bad in ("", " x", "-x", "a\nb", "x" * 201, "a b"):
        with pytest.raises(UsageError, match="key/id"):
            naming.workflow_id(bad, "r")
