"""The extractor against hostile archives: nothing may be created or changed outside the destination, every
skipped or truncated member is a warning, memory and disk stay bounded, and nothing raises."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from agentvm.run.extract import Limits, extract, safe_parts
from tests.unit.run import tarcraft as t

BIG = Limits(max_bytes=10 * 1024 * 1024)


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path below ``root`` with its content (files) or link target (links)."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                out[rel] = path.read_bytes()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture
def box(tmp_path):
    """A sandbox: ``outside/canary`` must never change; archives are extracted into ``box/dest``."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "canary").write_text("untouched")
    (tmp_path / "box").mkdir()
    return tmp_path


def run(box: Path, data: bytes, limits: Limits = BIG):
    archive = box / "box" / "a.tar"
    archive.write_bytes(data)
    before = snapshot(box / "outside")
    report = extract(archive, box / "box" / "dest", limits)
    assert snapshot(box / "outside") == before, "something outside the destination changed"
    return report, box / "box" / "dest"


def codes(report) -> list[str]:
    return [w["code"] for w in report.warnings]


def test_a_plain_archive_is_extracted(box):
    data = t.with_tarfile([("a.txt", b"A"), ("sub/b.txt", b"BB")])
    report, dest = run(box, data)
    assert (dest / "a.txt").read_bytes() == b"A" and (dest / "sub" / "b.txt").read_bytes() == b"BB"
    assert (report.files, report.bytes, report.warnings) == (2, 3, [])


def test_gnu_tar_output_with_long_names_and_links(box, tmp_path):
    src = tmp_path / "src"
    deep = src / ("d" * 120)
    deep.mkdir(parents=True)
    (deep / ("f" * 150)).write_text("deep")
    (src / "link").symlink_to("/etc/passwd")
    os.link(deep / ("f" * 150), src / "hard")
    archive = tmp_path / "gnu.tar"
    assert os.system(f"tar -C {src} -cf {archive} . 2>/dev/null") == 0
    report, dest = run(box, archive.read_bytes())
    assert (dest / ("d" * 120) / ("f" * 150)).read_text() == "deep"
    assert not (dest / "link").exists() and not (dest / "link").is_symlink()
    assert "skipped_symbolic_link" in codes(report)
    assert "skipped_hard_link" in codes(report) or (dest / "hard").read_text() == "deep"


def _chain_archive(depth: int, target: str) -> bytes:
    """Directories with 247-character names, each shadowed by a one-letter symlink to it, so that a path of
    one-letter steps resolves (through the links) to a path longer than PATH_MAX; at the bottom a long-named
    link climbing back up, an ``escape`` link through all of it to ``target``, and a file written via it."""
    long_dir = "d" * 247
    steps = "abcdefghijklmnopqrstuvwxyz"[:depth]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        where = ""
        for step in steps:
            tar.addfile(_info(os.path.join(where, long_dir), tarfile.DIRTYPE))
            tar.addfile(_info(os.path.join(where, step), tarfile.SYMTYPE, long_dir))
            where = os.path.join(where, long_dir)
        bottom = os.path.join("/".join(steps), "l" * 254)
        tar.addfile(_info(bottom, tarfile.SYMTYPE, "../" * depth))
        tar.addfile(_info("escape", tarfile.SYMTYPE, os.path.join(bottom, target)))
        payload = b"pwned"
        info = _info("escape/canary", tarfile.REGTYPE)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _info(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def test_the_long_symlink_chain_escape_writes_nothing_outside(box):
    """The realpath/PATH_MAX class of CVE-2025-4517, aimed at ``outside/canary``. Links are never created, so
    the chain has nothing to stand on: ``escape/canary`` becomes a real file inside the destination."""
    report, dest = run(box, _chain_archive(16, "../" * 4 + "outside"))
    assert (box / "outside" / "canary").read_text() == "untouched"
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert (dest / "escape" / "canary").read_bytes() == b"pwned"
    assert codes(report).count("skipped_symbolic_link") == 18


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (b"../outside/canary", "contains .."),
        (b"a/../../outside/canary", "contains .."),
        (b"/tmp/absolute", "absolute"),
        (b"esc\x1b]52;c;aGk=\x07", "control characters"),
        (b"nl\nname", "control characters"),
    ],
)
def test_unsafe_names_are_refused(box, name, why):
    report, dest = run(box, t.member(name, b"pwned") + t.member(b"ok.txt", b"ok") + t.end())
    assert (dest / "ok.txt").read_bytes() == b"ok"
    [warning] = report.warnings
    assert warning["code"] == "unsafe_name" and why in warning["message"]


def test_too_long_names_are_refused():
    assert "longer than" in safe_parts("a/" + "x" * 300)
    assert "longer than" in safe_parts("/".join(["y" * 200] * 30))
    assert safe_parts("./a//b/.") == ["a", "b"]


def test_pax_path_cannot_smuggle_dot_dot(box):
    data = t.pax({b"path": b"../../outside/canary"}, b"harmless", b"pwned") + t.end()
    report, _dest = run(box, data)
    assert codes(report) == ["unsafe_name"]


def test_huge_extended_headers_are_not_read_into_memory(box):
    data = t.header(b"././@LongLink", b"L", size=10 * 1024**3) + t.end()  # claims 10 GiB of name
    report, dest = run(box, data)
    assert codes(report) == ["bad_archive"] and "larger than" in report.warnings[0]["message"]
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "code"),
    [(b"1", "skipped_hard_link"), (b"3", "skipped_character_device"), (b"4", "skipped_block_device"),
     (b"6", "skipped_FIFO")],
)  # fmt: skip
def test_links_devices_and_fifos_are_skipped(box, kind, code):
    report, dest = run(box, t.member(b"thing", kind=kind, link=b"/etc/shadow") + t.end())
    assert codes(report) == [code] and not (dest / "thing").exists()


def test_a_duplicate_name_cannot_replace_the_first(box):
    data = t.member(b"f", b"first") + t.member(b"f", b"second") + t.end()
    report, dest = run(box, data)
    assert (dest / "f").read_bytes() == b"first" and codes(report) == ["duplicate"]


def test_a_directory_then_a_file_of_the_same_name(box):
    data = t.member(b"d", kind=b"5") + t.member(b"d", b"x") + t.member(b"d/in", b"y") + t.end()
    report, dest = run(box, data)
    assert (dest / "d" / "in").read_bytes() == b"y" and codes(report) == ["duplicate"]


def test_the_total_cap_truncates_then_skips(box):
    data = t.member(b"a", b"x" * 600) + t.member(b"b", b"y" * 600) + t.member(b"c", b"z") + t.end()
    report, dest = run(box, data, Limits(max_bytes=1000))
    assert len((dest / "a").read_bytes()) == 600 and len((dest / "b").read_bytes()) == 400
    assert not (dest / "c").exists()
    assert codes(report) == ["truncated", "over_limit"] and report.bytes == 1000


def test_the_single_file_cap(box):
    report, dest = run(box, t.member(b"a", b"x" * 600) + t.member(b"b", b"y") + t.end(), Limits(1000, max_file=100))
    assert len((dest / "a").read_bytes()) == 100 and (dest / "b").read_bytes() == b"y"
    assert codes(report) == ["truncated"]


def test_the_member_cap(box):
    data = b"".join(t.member(f"f{i}".encode(), b"1") for i in range(50)) + t.end()
    report, dest = run(box, data, Limits(max_bytes=10**6, max_members=10))
    assert len(list(dest.iterdir())) == 10 and codes(report) == ["too_many_members"]


def test_a_compression_bomb_is_refused_without_inflating(box, tmp_path):
    inner = tmp_path / "bomb.tar"
    with tarfile.open(inner, "w") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 200 * 1024 * 1024
        with open("/dev/zero", "rb") as zero:
            tar.addfile(info, zero)
    compressed = gzip.compress(inner.read_bytes(), compresslevel=9)
    assert len(compressed) < 400 * 1024
    report, dest = run(box, compressed)
    assert codes(report) == ["bad_archive"] and "compressed" in report.warnings[0]["message"]
    assert list(dest.iterdir()) == []


def test_a_truncated_archive_keeps_what_was_complete(box):
    data = t.member(b"whole", b"w") + t.member(b"cut", b"c" * 2000)[:900]
    report, dest = run(box, data)
    assert (dest / "whole").read_bytes() == b"w"
    assert "bad_archive" in codes(report)


def test_garbage_and_a_bad_checksum(box):
    report, _ = run(box, b"not a tar archive at all" * 100)
    assert codes(report) == ["bad_archive"]
    broken = bytearray(t.member(b"f", b"x"))
    broken[0] = ord("g")  # the checksum no longer matches
    report, _ = run(box, bytes(broken) + t.end())
    assert codes(report) == ["bad_archive"] and "checksum" in report.warnings[0]["message"]


def test_base256_sizes_are_understood_and_capped(box):
    h = bytearray(t.header(b"big", size=0))
    h[124:136] = b"\x80" + (5 * 1024**3).to_bytes(11, "big")  # GNU base-256: 5 GiB
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    report, dest = run(box, bytes(h) + b"x" * 4096, Limits(max_bytes=1000))
    assert len((dest / "big").read_bytes()) == 1000
    assert "truncated" in codes(report) or "bad_archive" in codes(report)


def test_an_unreadable_archive_is_a_warning(box):
    report = extract(box / "missing.tar", box / "box" / "dest", BIG)
    assert codes(report) == ["unreadable_archive"]
