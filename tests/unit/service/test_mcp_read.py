"""agentvm mcp's bounded readers of a run folder, its argument checks, and `agentvm run`'s chosen run id."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from agentvm.commands import _chosen
from agentvm.errors import UsageError
from agentvm.service import mcpread, mcpserver
from agentvm.settings import Settings


@pytest.mark.parametrize(
    ("content", "limit", "tail", "text", "truncated"),
    [
        (b"hello", 10, False, "hello", False),
        (b"hello", 5, False, "hello", False),
        (b"hello world", 5, False, "hello", True),
        (b"hello world", 5, True, "world", True),
        ("h\u00e9".encode() + b"xyz", 2, False, "h", True),  # a character cut at the limit is dropped
        (b"\xff\xfeok", 10, False, "\ufffd\ufffdok", False),
    ],
)
def test_read_bounded(tmp_path, content, limit, tail, text, truncated):
    path = tmp_path / "f"
    path.write_bytes(content)
    found = mcpread.read_bounded(path, limit, tail=tail)
    assert (found.text, found.truncated, found.size) == (text, truncated, len(content))


def test_read_bounded_refuses_links_folders_and_fifos(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    (tmp_path / "link").symlink_to(secret)
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    for name in ("link", "dir", "fifo", "missing"):
        assert mcpread.read_bounded(tmp_path / name, 100) == mcpread.Bounded(None, 0, False), name


def test_list_outputs_is_sorted_bounded_and_skips_links(tmp_path):
    out = tmp_path / "output"
    (out / "sub").mkdir(parents=True)
    (out / "b.txt").write_text("bb")
    (out / "sub" / "a.txt").write_text("a")
    (out / "ln").symlink_to("/etc/passwd")
    (out / "lndir").symlink_to("/etc", target_is_directory=True)
    assert mcpread.list_outputs(out) == ([{"name": "b.txt", "bytes": 2}, {"name": "sub/a.txt", "bytes": 1}], False)
    for i in range(5):
        (out / f"n{i}").write_text("")
    listed, cut = mcpread.list_outputs(out, limit=3)
    assert len(listed) == 3 and cut
    assert mcpread.list_outputs(tmp_path / "none") == ([], False)


def test_folder_result_bounds_the_patch_and_the_text(tmp_path, monkeypatch):
    monkeypatch.setattr(mcpread, "PATCH_LIMIT", 10)
    (tmp_path / "workspace.patch").write_text("x" * 25)
    record = {"status": "succeeded", "exit_code": 0, "result_text": "y" * (mcpread.TEXT_LIMIT + 5), "error": None}
    found = mcpread.folder_result(tmp_path, record)
    assert (found["patch"], found["patch_bytes"], found["patch_truncated"]) == ("x" * 10, 25, True)
    assert len(found["result_text"]) == mcpread.TEXT_LIMIT and found["result_text_truncated"]
    assert mcpread.folder_result(None, {"result_text": 5})["result_text"] is None


@pytest.mark.parametrize(
    ("content", "record"),
    [('{"status": "succeeded"}', {"status": "succeeded"}), ("[1]", None), ("{not json", None), (None, None)],
)
def test_load_record(tmp_path, content, record):
    if content is not None:
        (tmp_path / "result.json").write_text(content)
    assert mcpread.load_record(tmp_path) == record


def test_last_phase_and_last_error(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("[    0.1s] clone ...\n[    2.0s] start ...\nnoise\n[    3.0s] bogus ...\nagentvm: first\n")
    assert mcpread.last_phase(log) == "start"
    log.write_text(log.read_text() + "agentvm: no golden VM p-golden: build it\n")
    assert mcpread.last_error(log) == "no golden VM p-golden: build it"
    assert mcpread.last_phase(tmp_path / "none") is None and mcpread.last_error(tmp_path / "none") is None


@pytest.mark.parametrize(
    "run_id", ["../../etc", "20261121t221500-3f9c1a/../x", "20261121t221500-3f9c1a\n", "", "x" * 100, "LAST"]
)
def test_check_run_id_refuses(run_id):
    with pytest.raises(UsageError):
        mcpserver.check_run_id(run_id)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"agent": "Claude"}, "agent"),
        ({"agent": "a;b"}, "agent"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 10**9}, "timeout"),
        ({"workspace": "ext::sh -c x", "ref": "main"}, "ref is for a git"),
        ({"workspace": "git://h/r"}, "https://"),
        ({"workspace": "https://h/r", "ref": "-x"}, "ref"),
        ({"model": "a\x1bb"}, "control"),
        ({"workspace": "/" + "a" * 5000}, "characters"),
    ],
)
def test_run_options_refuse(kwargs, message):
    args = {"agent": None, "workspace": None, "ref": None, "timeout": None, "model": None, **kwargs}
    with pytest.raises(UsageError, match=message):
        mcpserver.run_options(**args)


def test_check_prompt():
    assert mcpserver.check_prompt("é") == "é".encode()
    for bad in ("", "  \n", "\ud800", "x" * (mcpserver.MAX_PROMPT + 1), "é" * (mcpserver.MAX_PROMPT // 2 + 1)):
        with pytest.raises(UsageError):
            mcpserver.check_prompt(bad)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (None, None)),
        ({"AGENTVM_RUN_ID": "20261121t221500-3f9c1a"}, ("20261121t221500-3f9c1a", None)),
        (
            {"AGENTVM_RUN_ID": "20261121t221500-3f9c1a", "AGENTVM_TRIGGER": "mcp"},
            ("20261121t221500-3f9c1a", {"kind": "mcp", "name": None, "id": "20261121t221500-3f9c1a"}),
        ),
        ({"AGENTVM_RUN_ID": "../../etc"}, UsageError),
        ({"AGENTVM_TRIGGER": "$(x)"}, UsageError),
    ],
)
def test_agentvm_run_takes_a_chosen_run_id(tmp_path, env, expected):
    settings = Settings.load({"AGENTVM_STATE_DIR": str(tmp_path), **env})
    if expected is UsageError:
        with pytest.raises(UsageError):
            _chosen(settings)
    else:
        assert _chosen(settings) == expected


def test_backend_kind():
    ns = argparse.Namespace(backend=None)
    assert mcpserver.backend_kind(ns, {}) == "auto"
    assert mcpserver.backend_kind(ns, {"AGENTVM_MCP_BACKEND": "local"}) == "local"
    assert mcpserver.backend_kind(argparse.Namespace(backend="service"), {"AGENTVM_MCP_BACKEND": "local"}) == "service"
    with pytest.raises(UsageError):
        mcpserver.backend_kind(ns, {"AGENTVM_MCP_BACKEND": "remote"})
    json.dumps(mcpserver.INSTRUCTIONS)
