"""treecopy.replicate (the import's layer replicas) on real trees, and an overlay mounted on a replica: whiteouts,
opaque directories, owners, set-id bits, capabilities, xattrs, symlinks, FIFOs and hard links survive."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from multipass_double import treecopy
from multipass_double.errors import BackendError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, trusted.* xattrs, chown, mount)")

CAP_NET_RAW = bytes.fromhex("0000000200200000000000000000000000000000")  # vfs_cap_data v2, cap_net_raw+p


def make_layer(root: Path) -> None:
    """What a frozen upper dir holds: a whiteout for etc/gone, an opaque etc/skel, and ordinary entries."""
    (root / "etc/skel").mkdir(parents=True)
    os.mknod(root / "etc/gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    os.setxattr(root / "etc/skel", "trusted.overlay.opaque", b"y")
    os.setxattr(root / "etc", "trusted.overlay.impure", b"y")
    (root / "etc/skel/new").write_text("new\n")
    home = root / "home/ubuntu"
    home.mkdir(parents=True)
    (home / "a").write_text("a\n")
    os.link(home / "a", home / "b")
    os.chown(home / "a", 1000, 1000)
    os.chown(home, 1000, 1000)
    os.chmod(home, 0o750)
    os.symlink("a", home / "link")
    os.lchown(home / "link", 1000, 1000)
    os.mkfifo(home / "fifo", 0o640)
    tool = root / "usr/bin/tool"
    tool.parent.mkdir(parents=True)
    tool.write_bytes(b"#!/bin/sh\n")
    os.chown(tool, 0, 1000)
    os.chmod(tool, 0o4750)
    os.setxattr(tool, "security.capability", CAP_NET_RAW)
    os.setxattr(home / "a", "user.note", b"kept")
    os.utime(home, ns=(1_000_000_000, 2_000_000_000))


def describe(root: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        xattrs = tuple(
            sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in os.listxattr(path, follow_symlinks=False))
        )
        times = st.st_mtime_ns if not stat.S_ISLNK(st.st_mode) else 0
        out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_rdev, times, xattrs)
    return out


@pytest.mark.parametrize("link", [True, False])
def test_replica_keeps_everything_overlayfs_and_the_guest_see(tmp_path: Path, link: bool) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_layer(src)
    stats = treecopy.replicate(src, dst, link=link)
    assert describe(dst) == describe(src)
    assert (dst / "home/ubuntu/link").readlink() == Path("a")
    same_inode = os.lstat(dst / "home/ubuntu/a").st_ino == os.lstat(src / "home/ubuntu/a").st_ino
    assert same_inode is link
    assert os.lstat(dst / "home/ubuntu/a").st_ino == os.lstat(dst / "home/ubuntu/b").st_ino
    if link:
        assert (stats.linked, stats.copied, stats.copied_bytes) == (7, 0, 0)
    else:  # b is a link to the copy of a
        assert (stats.linked, stats.copied, stats.copied_bytes) == (1, 6, 4 + 2 + 10)  # new, a, tool
    assert stats.dirs == 7


def test_an_overlay_on_the_replica_hides_what_the_layer_deleted(tmp_path: Path) -> None:
    lower, layer = tmp_path / "lower", tmp_path / "layer"
    (lower / "etc/skel").mkdir(parents=True)
    (lower / "etc/gone").write_text("deleted in the layer\n")
    (lower / "etc/skel/old").write_text("hidden by the opaque dir\n")
    (lower / "etc/kept").write_text("kept\n")
    layer.mkdir()
    make_layer(layer)
    replica = tmp_path / "replica"
    treecopy.replicate(layer, replica, link=True)
    upper, work, merged = (tmp_path / n for n in ("upper", "work", "merged"))
    for d in (upper, work, merged):
        d.mkdir()
    opts = f"lowerdir={replica}:{lower},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
    try:
        assert sorted(os.listdir(merged / "etc")) == ["kept", "skel"]
        assert os.listdir(merged / "etc/skel") == ["new"]
        assert (merged / "home/ubuntu/b").read_text() == "a\n"
        (merged / "home/ubuntu/a").write_text("changed in the instance\n")  # copied up, never written through
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert (layer / "home/ubuntu/a").read_text() == "a\n"
    assert (replica / "home/ubuntu/a").read_text() == "a\n"


def test_a_file_that_takes_no_more_links_is_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "full").write_text("65000 links already\n")
    (src / "other").write_text("other\n")
    real_link = os.link

    def link(a: str, b: str, **kwargs: object) -> None:
        if str(a).endswith("/full"):
            raise OSError(errno.EMLINK, "Too many links")
        real_link(a, b, **kwargs)

    monkeypatch.setattr(treecopy.os, "link", link)
    stats = treecopy.replicate(src, dst, link=True)
    assert (stats.linked, stats.copied) == (1, 1)
    assert (dst / "full").read_text() == "65000 links already\n"
    assert os.lstat(dst / "full").st_ino != os.lstat(src / "full").st_ino


def test_links_across_filesystems_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f\n")

    def link(a: str, b: str, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(treecopy.os, "link", link)
    with pytest.raises(BackendError, match="not on the same filesystem"):
        treecopy.replicate(src, tmp_path / "dst", link=True)
