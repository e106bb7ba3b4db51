"""Unit tests of the return-path fixes found by the hostile-agent tests (tests/integration/hostile): a record
holding text that is not UTF-8, credentials in the names of what the agent left, collect.sh's member order."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

from agentvm import textsafe
from agentvm.run import collect, record
from agentvm.settings import REPO


def _record(**changes: object) -> dict:
    rec = record.fallback({"run_id": "20261121t221500-3f9c1a", "agent": {"name": "custom"}}, "x")
    rec.update(status="succeeded", exit_code=0, error=None)
    rec.update(changes)
    return rec


def test_a_record_with_names_that_are_not_utf8_is_written_as_it_is(tmp_path):
    # A link named b"\xff-x" in ~/output: tarformat decodes its name with surrogateescape.
    warning = {"code": "skipped_symbolic_link", "path": "./\udcff-x", "message": "skipped ./\udcff-x: a symbolic link"}
    rec = _record(warnings=[warning], result_text="from a JSON escape: \udcff")
    written = record.write(tmp_path / "result.json", rec)
    on_disk = json.loads((tmp_path / "result.json").read_bytes().decode("utf-8"))
    assert on_disk["status"] == written["status"] == "succeeded"  # not the fallback record
    assert on_disk["warnings"][0]["path"] == "./\ufffd-x"
    assert on_disk["result_text"] == "from a JSON escape: \ufffd"
    json.dumps(written, ensure_ascii=False).encode()  # what the caller prints (--json) encodes too


def test_a_plain_record_is_left_alone(tmp_path):
    rec = _record(result_text="ünïcode ✓", warnings=[])
    assert record.write(tmp_path / "result.json", rec) == rec


def test_credentials_are_redacted_from_names_and_contents(tmp_path):
    secret = "sk-unit-0123456789"
    redactor = textsafe.Redactor({"KEY": secret})
    out = tmp_path / "output"
    (out / f"dir-{secret}").mkdir(parents=True)
    (out / f"dir-{secret}" / f"{secret}.txt").write_text(f"key {secret}\n")
    (out / "[redacted:KEY].txt").write_text("taken\n")
    (out / f"{secret}.txt").write_text("plain\n")
    changed = collect.redact_tree(tmp_path, redactor)
    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert not any(secret in n for n in names), names
    assert (out / "dir-[redacted:KEY]" / "[redacted:KEY].txt").read_text() == "key [redacted:KEY]\n"
    assert (out / "[redacted:KEY].txt").read_text() == "taken\n"  # an existing name is not overwritten
    assert (out / "[redacted:KEY].txt.1").read_text() == "plain\n"
    assert len(changed) == 4


def test_collect_sh_packs_the_records_and_streams_before_the_output(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    (home / "output").mkdir(parents=True)
    work.mkdir()
    (home / "output" / "big.bin").write_bytes(b"x" * 4096)
    for name in ("stdout.log", "stderr.log", "agent-summary.json", "agent_version"):
        (work / name).write_text(name)
    env = {**os.environ, "HOME": str(home)}
    script = REPO / "roles" / "agent_run" / "files" / "collect.sh"
    subprocess.run(["sh", str(script), str(work)], env=env, check=True, capture_output=True)
    with tarfile.open(work / "results.tar") as tar:
        names = tar.getnames()
    assert names == ["agent-summary.json", "agent_version", "stdout.log", "stderr.log", "output.tar"]


def test_collect_sh_with_nothing_but_output(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    (home / "output").mkdir(parents=True)
    work.mkdir()
    script = Path(REPO / "roles" / "agent_run" / "files" / "collect.sh")
    subprocess.run(["sh", str(script), str(work)], env={**os.environ, "HOME": str(home)}, check=True)
    with tarfile.open(work / "results.tar") as tar:
        assert tar.getnames() == ["output.tar"]
