"""``multipass-double import``: a Stopped instance of another data folder appears in this one (not a Multipass
command; for test suites that build one expensive instance, such as a golden VM, and share it between
parallel workers that each have their own data folder).

The instance's layers are immutable once frozen, so they are hard-linked (``treecopy.replicate``); its own
upper dir, which the source may still change later, is copied. The record is the source's, with a new
``uid``, layer ids of this folder, ``created`` now, a clone counter at 0, and (under ``--as``) the clone rule
for ``instance_id``, so ``info``, ``list``, snapshots and their comments, ``clone``, ``start``, ``restore`` and
``delete`` treat it like any instance of this folder. Deleting either side only unlinks its own names of the files.

Locks: the source instance's lock is held *shared* for the whole copy (concurrent imports of one source
proceed together; a start, clone, snapshot, restore or delete of it waits, and the import waits for them);
the two global locks only for short reads and the final commit, which moves the staged layers and
instance folder into place with renames and writes the record in one critical section.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from multipass_double import image
from multipass_double.common import Context, live_state, valid_name
from multipass_double.config import Paths
from multipass_double.errors import BackendError
from multipass_double.state import Record, Store
from multipass_double.treecopy import Stats, replicate

STAGING_PREFIX = ".import-"
LAYER_ID = re.compile(r"[0-9a-f]{1,64}")  # state.py names layers with hex digits


@dataclass
class Imported:
    name: str
    source: str
    source_data: Path
    layers: int
    linked: bool  # False: the folders are on different filesystems and the layers were copied
    stats: Stats = field(default_factory=Stats)
    seconds: float = 0.0

    def summary(self) -> str:
        how = "hard-linked" if self.linked else "copied (different filesystems)"
        return (
            f"Imported: {self.name} (from {self.source} in {self.source_data}; {self.layers} "
            f"layer{'' if self.layers == 1 else 's'} {how}: "
            f"{self.stats.linked} files linked, {self.stats.copied} copied, "
            f"{self.stats.copied_bytes / 1024**2:.1f} MiB copied; {self.seconds:.1f} s)\n"
        )


def import_instance(dest: Paths, source_data: Path, name: str, new_name: str | None = None) -> Imported:
    """Import instance ``name`` of data folder ``source_data`` into ``dest`` as ``new_name`` (default: the same)."""
    started = time.monotonic()
    src = Paths(data=source_data.resolve(), images=dest.images)
    target = name if new_name is None else new_name
    _check_arguments(dest, src, name, target)
    dest_store, src_store = Store(dest), Store(src)
    _check_free(dest_store, target)
    _check_image(dest, _stopped_source(src, src_store, name), name)  # checked again under the lock
    dest.data.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(dest)
    staging = dest.data / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        with src_store.instance_lock(name, shared=True):
            rec = _stopped_source(src, src_store, name)
            _check_image(dest, rec, name)
            linked = _can_link(src, staging)
            ids = {layer: uuid.uuid4().hex[:12] for layer in _layers_of(rec)}
            done = Imported(target, name, src.data, len(ids), linked)
            _stage(src, rec, ids, staging, done)
            again = _stopped_source(src, src_store, name)
            if again["uid"] != rec["uid"] or _layers_of(again) != list(ids):
                raise BackendError(f'instance "{name}" changed in {src.data} during the import; try again')
        _commit(dest, dest_store, staging, _new_record(rec, target, ids), ids)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    done.seconds = time.monotonic() - started
    return done


def _check_arguments(dest: Paths, src: Paths, name: str, target: str) -> None:
    if src.data == dest.data:
        raise BackendError(f"{src.data} is this data folder (multipass clone copies an instance within one)")
    if not src.state_file.is_file():
        raise BackendError(f"{src.data} is not a data folder of the Multipass double (it has no state.json)")
    if not valid_name(target):
        raise BackendError(f'invalid instance name "{target}" (Multipass instance names are hostnames)')
    if not valid_name(name):
        raise BackendError(f'instance "{name}" does not exist in {src.data}')


def _check_free(store: Store, target: str) -> None:
    rec = store.snapshot()["instances"].get(target) if store.paths.state_file.exists() else None
    if rec is not None:
        deleted = " (deleted: purge it first)" if rec["deleted"] else ""
        raise BackendError(f'instance "{target}" already exists in {store.paths.data}{deleted}')


def _stopped_source(src: Paths, store: Store, name: str) -> Record:
    rec = store.snapshot()["instances"].get(name)
    if rec is None:
        raise BackendError(f'instance "{name}" does not exist in {src.data}')
    state = live_state(Context(paths=src, store=store), rec)
    if state == "Deleted":
        raise BackendError(f'instance "{name}" is deleted in {src.data} (recover it first)')
    if state != "Stopped":
        raise BackendError(f'only a Stopped instance can be imported: "{name}" is {state} in {src.data}')
    return rec


def _check_image(dest: Paths, rec: Record, name: str) -> None:
    built = image.load(dest.images)
    if built is None:
        raise BackendError(f"the instance image is not built in {dest.images} (multipass-double build-image)")
    if built.sha256 != rec["image_hash"]:
        raise BackendError(
            f'instance "{name}" was made on image {rec["image_hash"][:12]}, but the image of this data folder '
            f"({built.rootfs}) is {built.sha256[:12]}: its layers only fit the image they were made on"
        )


def _layers_of(rec: Record) -> list[str]:
    """Every layer the instance uses, its own first, then its snapshots' (each once)."""
    layers = list(rec["layers"])
    for snap in rec["snapshots"].values():
        layers += snap["layers"]
    return list(dict.fromkeys(layers))


def _can_link(src: Paths, staging: Path) -> bool:
    """Hard links are possible from the source folder into this one (same filesystem, same mount)."""
    probe = staging / "link-probe"
    try:
        os.link(src.state_file, probe)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return False
        raise BackendError(f"cannot hard-link {src.state_file} into {staging}: {exc.strerror}") from exc
    probe.unlink()
    return True


def _stage(src: Paths, rec: Record, ids: dict[str, str], staging: Path, done: Imported) -> None:
    (staging / "layers").mkdir()
    for layer, new_id in ids.items():
        if not LAYER_ID.fullmatch(layer):
            raise BackendError(f'instance "{rec["name"]}" in {src.data} names an invalid layer {layer!r}')
        path = src.layers / layer
        if not path.is_dir():
            raise BackendError(f'layer {layer} of instance "{rec["name"]}" is missing in {src.layers}')
        done.stats.add(replicate(path, staging / "layers" / new_id, link=done.linked))
    inst = staging / "instance"
    inst.mkdir()
    upper = src.instance_dir(rec["name"]) / "upper"
    if upper.is_dir():
        done.stats.add(replicate(upper, inst / "upper", link=False))
    else:
        (inst / "upper").mkdir()
    for folder in ("work", "merged", "seed"):
        (inst / folder).mkdir()


def _new_record(rec: Record, target: str, ids: dict[str, str]) -> Record:
    new = json.loads(json.dumps(rec))
    source = rec["name"]
    new.update(
        name=target,
        uid=uuid.uuid4().hex,
        state="Stopped",
        preparing=False,
        deleted=False,
        worker_pid=-1,
        clone_count=0,  # its clones here are <name>-clone1, 2, ... whatever the source folder cloned
        created=dt.datetime.now(dt.UTC).isoformat(),
        layers=[ids[layer] for layer in rec["layers"]],
    )
    if target != source:  # as clone does: a new hostname is a new instance for cloud-init
        new["instance_id"] = (
            target + rec["instance_id"][len(source) :] if rec["instance_id"].startswith(source) else target
        )
    for snap in new["snapshots"].values():
        snap["layers"] = [ids[layer] for layer in snap["layers"]]
    return new


def _commit(dest: Paths, store: Store, staging: Path, rec: Record, ids: dict[str, str]) -> None:
    with store.locked() as st:
        if rec["name"] in st["instances"]:
            raise BackendError(f'instance "{rec["name"]}" already exists in {dest.data} (made during the import)')
        folder = dest.instance_dir(rec["name"])
        if folder.exists():
            raise BackendError(f"{folder} exists but no instance of that name does (a leftover): remove it first")
        for new_id in ids.values():  # unreferenced until the record is written: gc would remove them on failure
            os.rename(staging / "layers" / new_id, dest.layers / new_id)
        os.rename(staging / "instance", folder)
        st["instances"][rec["name"]] = rec


def _remove_stale_staging(dest: Paths) -> None:
    """Staging folders of imports that were killed (their process is gone)."""
    for folder in dest.data.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)
