"""Unit tests of the return-path fixes found by the hostile-agent tests (tests/integration/hostile): a record
holding text that is not UTF-8, credentials in the names of what the agent left, collect.sh's member order,
the extractor's open folders and depth limit."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

from agentvm import textsafe
from agentvm.run import collect, record
from agentvm.run.extract import MAX_DEPTH, Limits, extract
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


# -- the extractor keeps the folders of the previous member open; names deeper than MAX_DEPTH are refused ------


def _tar(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(name.encode())
            tar.addfile(info, io.BytesIO(name.encode()) if not name.endswith("/") else None)
    return path


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_members_that_come_and_go_between_folders_land_where_they_belong(tmp_path):
    names = ["a/b/c/1", "a/b/c/2", "a/b/3", "a/x/4", "a/b/c/5", "top", "a/b/c/d/e/6", "q/", "q/r/7", "a/8"]
    fds = _open_fds()
    report = extract(_tar(tmp_path / "t.tar", names), tmp_path / "dest", Limits(max_bytes=1 << 20))
    assert _open_fds() == fds
    assert report.warnings == [] and report.files == 9
    for name in names:
        if not name.endswith("/"):
            assert (tmp_path / "dest" / name).read_text() == name


def test_a_file_in_the_way_of_a_folder_is_a_warning_and_later_members_still_land(tmp_path):
    names = ["a/f", "a/f/inside", "a/g"]
    report = extract(_tar(tmp_path / "t.tar", names), tmp_path / "dest", Limits(max_bytes=1 << 20))
    assert [w["code"] for w in report.warnings] == ["not_created"]
    assert (tmp_path / "dest" / "a" / "g").read_text() == "a/g"


def test_names_deeper_than_the_limit_are_refused(tmp_path):
    deep = "/".join(["d"] * MAX_DEPTH) + "/too-deep"
    fine = "/".join(["d"] * (MAX_DEPTH - 1)) + "/fine"
    report = extract(_tar(tmp_path / "t.tar", [deep, fine]), tmp_path / "dest", Limits(max_bytes=1 << 20))
    assert [(w["code"], w["message"].endswith(f"more than {MAX_DEPTH} levels deep")) for w in report.warnings] == [
        ("unsafe_name", True)
    ]
    assert (tmp_path / "dest" / fine).read_text() == fine
