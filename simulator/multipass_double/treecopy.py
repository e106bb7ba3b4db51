"""Replicas of overlay layer trees that keep everything overlayfs reads from a lower or an upper dir.

overlayfs keeps its own metadata in the tree: a whiteout is a character device 0:0 (or a file with
``trusted.overlay.whiteout``), an opaque directory has ``trusted.overlay.opaque``, copied-up entries have
``trusted.overlay.origin``, their directory ``trusted.overlay.impure``, a renamed directory
``trusted.overlay.redirect``. A hard link shares the inode, so it carries all of a non-directory's
metadata (type, device numbers, mode, owner, times, xattrs). Directories cannot be linked: they are made
anew with their mode, owner, times and every xattr (``trusted.*`` needs root). Inode flags (``chattr``)
are not replicated.

``replicate(src, dst, link=True)`` hard-links every non-directory (a file that cannot take another link,
EMLINK, or that refuses one, EPERM, is copied instead); ``link=False`` copies everything, keeping the hard
links inside the tree. ``src`` must not change meanwhile: layers are immutable, and the callers hold the
instance's lock for an upper dir.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from multipass_double.errors import BackendError


@dataclass
class Stats:
    linked: int = 0  # non-directories hard-linked
    copied: int = 0  # non-directories copied
    copied_bytes: int = 0
    dirs: int = 0

    def add(self, other: Stats) -> None:
        self.linked += other.linked
        self.copied += other.copied
        self.copied_bytes += other.copied_bytes
        self.dirs += other.dirs


def copy_xattrs(src: str, dst: str) -> None:
    """Every extended attribute of ``src`` onto ``dst`` (symlinks themselves, not their targets)."""
    for name in os.listxattr(src, follow_symlinks=False):
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as exc:
            raise BackendError(f"cannot copy the extended attribute {name} of {src}: {exc.strerror}") from exc


def _set_meta(src: str, dst: str, st: os.stat_result) -> None:
    """Owner, then mode (chown clears set-id bits), then xattrs (chown drops security.capability)."""
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    copy_xattrs(src, dst)


def _copy_node(src: str, dst: str, st: os.stat_result, stats: Stats) -> None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
        stats.copied_bytes += st.st_size
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
    else:
        raise BackendError(f"cannot copy {src}: unknown file type {stat.S_IFMT(mode):o}")
    _set_meta(src, dst, st)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    stats.copied += 1


def _place(src: str, dst: str, st: os.stat_result, link: bool, seen: dict[tuple[int, int], str], stats: Stats) -> None:
    """One non-directory: a hard link to the source, or to the copy already made of the same inode."""
    if link:
        try:
            os.link(src, dst, follow_symlinks=False)
            stats.linked += 1
            return
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise BackendError(f"cannot hard-link {src} into {dst}: not on the same filesystem") from exc
            if exc.errno not in (errno.EMLINK, errno.EPERM):
                raise
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in seen:
        os.link(seen[key], dst, follow_symlinks=False)
        stats.linked += 1
        return
    _copy_node(src, dst, st, stats)
    if st.st_nlink > 1:
        seen[key] = dst


def replicate(src: Path, dst: Path, *, link: bool) -> Stats:
    """Make ``dst`` (which must not exist) a replica of the directory tree ``src``; see the module docstring."""
    stats = Stats()
    seen: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, os.stat_result]] = []
    pending = [(str(src), str(dst))]
    while pending:  # iterative: no recursion limit however deep the tree
        src_dir, dst_dir = pending.pop()
        st = os.lstat(src_dir)
        os.mkdir(dst_dir, 0o700)
        _set_meta(src_dir, dst_dir, st)
        dirs.append((dst_dir, st))
        stats.dirs += 1
        with os.scandir(src_dir) as entries:
            for entry in entries:
                target = os.path.join(dst_dir, entry.name)
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, target))
                else:
                    _place(entry.path, target, entry.stat(follow_symlinks=False), link, seen, stats)
    for dst_dir, st in dirs:  # last: creating entries changes a directory's times
        os.utime(dst_dir, ns=(st.st_atime_ns, st.st_mtime_ns))
    return stats
