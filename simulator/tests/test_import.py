"""``multipass-double import``: a Stopped instance of one data folder made an instance of another, with real
instances: what `info`/`list` show, clones that boot with the source's files, snapshots and restore, deleting
either side, refusals, imports in parallel and across filesystems."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from simulator import DOUBLE_ADMIN, DOUBLE_BIN, REPO

pytestmark = pytest.mark.double

COMMENT = json.dumps({"schema": 1, "build_id": "import-test", "agents": ["claude", "codex"]})

# Run in the source before the `sealed` snapshot: lands in a frozen layer (hard-linked by the import).
BEFORE_SEAL = """set -e
echo sealed-content > /home/ubuntu/marker
ln /home/ubuntu/marker /home/ubuntu/marker-link
sudo rm /etc/motd
sudo rm -rf /etc/skel && sudo mkdir /etc/skel && sudo touch /etc/skel/only-this
sudo install -m 4750 -o root -g ubuntu /bin/true /usr/local/bin/setuid-true
"""
# Run after it: stays in the source's upper dir (copied by the import).
AFTER_SEAL = """set -e
echo after-seal > /home/ubuntu/after-seal
echo shared > /var/tmp/h1 && ln /var/tmp/h1 /var/tmp/h2
sudo rm /etc/issue
"""
CHECK = (
    "cat /home/ubuntu/marker; stat -c %U /home/ubuntu/marker; test ~/marker -ef ~/marker-link && echo linked; test ! -e /etc/motd && echo no-motd; "
    "ls -A /etc/skel; stat -c '%a %U %G' /usr/local/bin/setuid-true; cat /home/ubuntu/after-seal 2>&1; "
    "stat -c %i /var/tmp/h1 /var/tmp/h2 2>&1 | sort -u | wc -l; test ! -e /etc/issue && echo no-issue; hostname"
)


@dataclass
class Folder:
    data: Path
    env: dict[str, str]

    def mp(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(DOUBLE_BIN), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def ok(self, *args: str) -> str:
        proc = self.mp(*args)
        assert proc.returncode == 0, f"multipass {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def import_(self, source: Folder, *args: str) -> subprocess.CompletedProcess:
        return admin(self.env, "import", "--from", str(source.data), *args)

    def state(self) -> dict:
        return json.loads((self.data / "state.json").read_text())

    def down(self) -> None:
        admin(self.env, "down", "--data", str(self.data), "--purge", "--quiet")


def admin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DOUBLE_ADMIN), *args], env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture(scope="module")
def folders(double_env: dict[str, str]) -> Iterator[Callable]:
    made: list[Folder] = []

    def make(base: Path | None = None) -> Folder:
        data = (base or REPO / ".cache") / f"test-import-{uuid.uuid4().hex[:8]}"
        folder = Folder(data, dict(double_env, MULTIPASS_DOUBLE_DATA=str(data)))
        made.append(folder)
        return folder

    yield make
    for folder in made:
        folder.down()


@pytest.fixture(scope="module")
def source(folders: Callable) -> Folder:
    """Folder A with `src`: a file, a whiteout, an opaque dir, set-uid, hard links; `sealed`; more after it."""
    a = folders()
    a.ok("launch", "--name", "src", "--cpus", "2", "--memory", "1536M")
    a.ok("exec", "src", "--", "bash", "-c", BEFORE_SEAL)
    a.ok("stop", "src")
    a.ok("snapshot", "--name", "sealed", "--comment", COMMENT, "src")
    a.ok("exec", "src", "--", "bash", "-c", AFTER_SEAL)
    a.ok("stop", "src")
    return a


@pytest.fixture(scope="module")
def imported(source: Folder, folders: Callable) -> Folder:
    b = folders()
    proc = b.import_(source, "src")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Imported: src (from src in {source.data}; 1 layer hard-linked: ")
    assert proc.stderr == ""
    return b


VIEWS = (
    ("list",),
    ("list", "--format", "json"),
    ("list", "--format", "csv"),
    ("list", "--snapshots"),
    ("list", "--snapshots", "--format", "yaml"),
    ("info", "src"),
    ("info", "src", "--format", "json"),
    ("info", "--snapshots", "src"),
    ("info", "src.sealed", "--format", "json"),
    ("info", "src.sealed", "--format", "csv"),
    ("get", "local.src.cpus"),
    ("get", "local.src.memory"),
)


def test_import_shows_what_the_source_shows(source: Folder, imported: Folder) -> None:
    for view in VIEWS:
        assert imported.ok(*view) == source.ok(*view), view
    assert (
        imported.ok("list", "--format", "csv")
        == 'Name,State,IPv4,IPv6,Release,AllIPv4\nsrc,Stopped,,,Ubuntu 24.04 LTS,""\n'
    )
    snap = json.loads(imported.ok("info", "src.sealed", "--format", "json"))["info"]["src"]["snapshots"]["sealed"]
    assert (snap["comment"], snap["parent"], snap["cpu_count"], snap["memory_size"]) == (COMMENT, "", "2", "1.5GiB")
    assert json.loads(snap["comment"])["build_id"] == "import-test"


def test_import_links_the_layers_and_copies_the_upper(source: Folder, imported: Folder) -> None:
    src_rec, new_rec = source.state()["instances"]["src"], imported.state()["instances"]["src"]
    assert new_rec["uid"] != src_rec["uid"] and new_rec["instance_id"] == src_rec["instance_id"] == "src"
    assert len(new_rec["layers"]) == len(src_rec["layers"]) == 1 and new_rec["layers"] != src_rec["layers"]
    assert new_rec["snapshots"]["sealed"]["layers"] == new_rec["layers"]
    src_layer, new_layer = (f.data / "layers" / r["layers"][0] for f, r in ((source, src_rec), (imported, new_rec)))
    for rel in ("home/ubuntu/marker", "etc/motd", "usr/local/bin/setuid-true"):
        assert os.lstat(new_layer / rel).st_ino == os.lstat(src_layer / rel).st_ino, rel  # the same inode
    assert os.getxattr(new_layer / "etc/skel", "trusted.overlay.opaque") == b"y"
    src_upper, new_upper = (f.data / "instances/src/upper" for f in (source, imported))
    assert (new_upper / "home/ubuntu/after-seal").read_text() == "after-seal\n"
    assert (
        os.lstat(new_upper / "home/ubuntu/after-seal").st_ino != os.lstat(src_upper / "home/ubuntu/after-seal").st_ino
    )
    assert os.lstat(new_upper / "var/tmp/h1").st_ino == os.lstat(new_upper / "var/tmp/h2").st_ino
    whiteout = os.lstat(new_upper / "etc/issue")
    assert (whiteout.st_mode & 0o170000, whiteout.st_rdev) == (0o020000, 0)
    assert not list(imported.data.glob(".import-*"))


def test_clones_of_the_import_boot_with_the_source_files_and_restore_works(imported: Folder) -> None:
    assert imported.ok("clone", "src") == "Cloned from src to src-clone1.\n"
    imported.ok("start", "src-clone1")
    out = imported.ok("exec", "src-clone1", "--", "bash", "-c", CHECK)
    expected = (
        "sealed-content\nubuntu\nlinked\nno-motd\nonly-this\n4750 root ubuntu\nafter-seal\n1\nno-issue\nsrc-clone1\n"
    )
    assert out == expected
    assert imported.ok("restore", "--destructive", "src.sealed") == "Snapshot restored: src.sealed\n"
    imported.ok("clone", "src", "--name", "restored")
    imported.ok("start", "restored")
    out = imported.ok("exec", "restored", "--", "bash", "-c", CHECK)
    missing = "cat: /home/ubuntu/after-seal: No such file or directory\n2\n"  # and /etc/issue is back
    assert out == f"sealed-content\nubuntu\nlinked\nno-motd\nonly-this\n4750 root ubuntu\n{missing}restored\n"
    imported.ok("delete", "--purge", "src-clone1", "restored")


def test_refusals(source: Folder, imported: Folder, folders: Callable) -> None:
    fresh = folders()

    def refused(dest: Folder, *args: str) -> str:
        proc = dest.import_(source, *args)
        assert proc.returncode == 1 and proc.stdout == "", proc
        return proc.stderr

    assert refused(fresh, "nope") == f'multipass-double import: instance "nope" does not exist in {source.data}\n'
    assert refused(imported, "src") == f'multipass-double import: instance "src" already exists in {imported.data}\n'
    assert refused(fresh, "src", "--as", "bad_name") == (
        'multipass-double import: invalid instance name "bad_name" (Multipass instance names are hostnames)\n'
    )
    assert refused(source, "src", "--as", "x") == (
        f"multipass-double import: {source.data} is this data folder (multipass clone copies an instance within one)\n"
    )
    missing = fresh.data.parent / f"no-such-folder-{uuid.uuid4().hex[:6]}"
    proc = admin(fresh.env, "import", "--from", str(missing), "src")
    assert (proc.returncode, proc.stderr) == (
        1,
        f"multipass-double import: {missing} is not a data folder of the Multipass double (it has no state.json)\n",
    )
    source.ok("start", "src")
    try:
        assert refused(fresh, "src") == (
            f'multipass-double import: only a Stopped instance can be imported: "src" is Running in {source.data}\n'
        )
    finally:
        source.ok("stop", "src")
    source.ok("delete", "src")
    try:
        assert refused(fresh, "src") == (
            f'multipass-double import: instance "src" is deleted in {source.data} (recover it first)\n'
        )
    finally:
        source.ok("recover", "src")
    assert not fresh.data.exists()  # nothing was created for a refused import
    imported.ok("clone", "src", "--name", "gone")
    imported.ok("delete", "gone")
    assert refused(imported, "src", "--as", "gone") == (
        f'multipass-double import: instance "gone" already exists in {imported.data} (deleted: purge it first)\n'
    )
    imported.ok("purge")


def test_a_source_on_another_image_is_refused(source: Folder, folders: Callable) -> None:
    fake, dest = folders(), folders()
    rec = dict(source.state()["instances"]["src"], image_hash="0" * 64)
    fake.data.mkdir(parents=True)
    (fake.data / "state.json").write_text(json.dumps({"instances": {"src": rec}, "faults": {}}))
    proc = dest.import_(fake, "src")
    assert proc.returncode == 1
    assert proc.stderr.startswith('multipass-double import: instance "src" was made on image 000000000000, but ')
    assert proc.stderr.endswith(": its layers only fit the image they were made on\n")
    assert not dest.data.exists()


def test_deleting_the_import_keeps_the_source_working(source: Folder, folders: Callable) -> None:
    b = folders()
    layer = source.data / "layers" / source.state()["instances"]["src"]["layers"][0]
    links = os.lstat(layer / "home/ubuntu/marker").st_nlink
    proc = b.import_(source, "src", "--as", "copy")
    assert proc.returncode == 0, proc.stderr
    assert b.state()["instances"]["copy"]["instance_id"] == "copy"
    assert os.lstat(layer / "home/ubuntu/marker").st_nlink == links + 2  # marker and marker-link in B
    b.ok("clone", "copy")
    b.ok("start", "copy-clone1")
    assert b.ok("exec", "copy-clone1", "--", "cat", "/home/ubuntu/marker") == "sealed-content\n"
    b.ok("delete", "--purge", "copy", "copy-clone1")
    assert b.ok("list") == "No instances found.\n"
    assert list((b.data / "layers").iterdir()) == []  # its layer copies were collected
    assert os.lstat(layer / "home/ubuntu/marker").st_nlink == links
    source.ok("clone", "src", "--name", "after-import")
    source.ok("start", "after-import")
    assert source.ok("exec", "after-import", "--", "bash", "-c", CHECK).startswith("sealed-content\nubuntu\nlinked\n")
    source.ok("delete", "--purge", "after-import")


def test_parallel_imports_and_a_busy_source(source: Folder, folders: Callable) -> None:
    """Two imports of one source at once, while its folder clones and snapshots it: each import is consistent."""
    dests = [folders(), folders()]
    imports = [
        subprocess.Popen(
            [sys.executable, str(DOUBLE_ADMIN), "import", "--from", str(source.data), "src"],
            env=d.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for d in dests
    ]
    source.ok("snapshot", "--name", "during", "src")
    source.ok("clone", "src", "--name", "busy-clone")
    for proc in imports:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert out.startswith("Imported: src ")
    for dest in dests:
        rec = dest.state()["instances"]["src"]
        assert set(rec["snapshots"]) in ({"sealed"}, {"sealed", "during"})
        for layer in [*rec["layers"], *(la for s in rec["snapshots"].values() for la in s["layers"])]:
            assert (dest.data / "layers" / layer).is_dir()
    dests[1].ok("delete", "--purge", "src")
    dests[0].ok("clone", "src")
    dests[0].ok("start", "src-clone1")
    assert dests[0].ok("exec", "src-clone1", "--", "cat", "/home/ubuntu/after-seal") == "after-seal\n"
    source.ok("delete", "--purge", "busy-clone", "src.during")


def test_across_filesystems_the_layers_are_copied(source: Folder, folders: Callable, tmp_path: Path) -> None:
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2G", "tmpfs", str(mount)], check=True)
    try:
        dest = folders(mount)
        proc = dest.import_(source, "src")
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == (
            f"multipass-double import: {source.data} and {dest.data} are on different filesystems: "
            "the layers were copied, not hard-linked\n"
        )
        assert "; 2 layers copied (different filesystems): " in proc.stdout  # `sealed` and `during`
        layer = dest.data / "layers" / dest.state()["instances"]["src"]["layers"][-1]
        assert os.lstat(layer / "home/ubuntu/marker").st_nlink == 2  # marker-link, copied as a link
        assert os.getxattr(layer / "etc/skel", "trusted.overlay.opaque") == b"y"
        assert dest.ok("info", "--snapshots", "src") == source.ok("info", "--snapshots", "src")
        dest.ok("clone", "src")
        dest.ok("start", "src-clone1")
        out = dest.ok("exec", "src-clone1", "--", "bash", "-c", CHECK)
        assert out.startswith("sealed-content\nubuntu\nlinked\nno-motd\nonly-this\n4750 root ubuntu\nafter-seal\n1\n")
        dest.down()
    finally:
        subprocess.run(["umount", str(mount)], check=False)
