"""A ready pool VM is claimed by exactly one run: 16 processes race for a pool of 4 (real files, real renames)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import types

from agentvm.host.pool import Pool
from agentvm.multipass import Multipass
from agentvm.settings import Settings
from tests.conftest import REPO

CLAIMER = textwrap.dedent(
    """
    import sys, time
    from agentvm.host.pool import Pool
    from agentvm.multipass import Multipass
    from agentvm.settings import Settings
    settings = Settings.load({"AGENTVM_STATE_DIR": sys.argv[1], "MULTIPASS_BIN": "/bin/false"})
    pool = Pool(settings, Multipass(None, {}))
    while time.time() < float(sys.argv[2]):
        time.sleep(0.001)
    vm = pool.claim("m1")
    print(vm.name if vm else "-", flush=True)
    """
)


def fill(root, names, manifest="m1"):
    for name in names:
        (root / "pool" / "ready" / f"{name}.json").write_text(
            json.dumps({"name": name, "golden_manifest_id": manifest, "created_at": time.time()})
        )


def test_sixteen_concurrent_claims_against_a_pool_of_four(tmp_path):
    settings = Settings.load({"AGENTVM_STATE_DIR": str(tmp_path)})
    Pool(settings, Multipass(None, {}))
    names = [f"p-pool-20260101t00000{i}-abcdef" for i in range(4)]
    fill(tmp_path, names)
    start = time.time() + 2.0
    env = {"PYTHONPATH": str(REPO / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(tmp_path), str(start)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(16)
    ]
    got = [p.communicate(timeout=60)[0].strip() for p in procs]
    claimed = [g for g in got if g != "-"]
    assert sorted(claimed) == sorted(names)  # each VM once, none twice
    assert got.count("-") == 12
    assert list((tmp_path / "pool" / "ready").iterdir()) == []


def test_a_vm_of_another_golden_is_not_claimed(tmp_path):
    settings = Settings.load({"AGENTVM_STATE_DIR": str(tmp_path)})
    pool = Pool(settings, Multipass(None, {}))
    fill(tmp_path, ["p-pool-20260101t000000-aaaaaa"], manifest="old")
    assert pool.claim("new") is None
    assert pool.stale("new", 3600)[0].name == "p-pool-20260101t000000-aaaaaa"
    fill(tmp_path, ["p-pool-20260101t000000-bbbbbb"], manifest="new")
    assert pool.claim("new").name == "p-pool-20260101t000000-bbbbbb"


def test_doctor_reports_the_pool(tmp_path):
    import fcntl

    from agentvm.host.doctor import check_pool

    settings = Settings.load({"AGENTVM_STATE_DIR": str(tmp_path)})
    mp = Multipass(None, {})
    (none,) = check_pool(settings, mp)
    assert (none.level, "make pool POOL=N" in none.detail) == ("ok", True)
    fill(tmp_path, ["p-pool-20260101t000001-abcdef", "p-pool-20260101t000002-abcdef"])
    (orphaned,) = check_pool(settings, mp)
    assert orphaned.level == "warn" and "2 VM(s) of a keeper that is not running" in orphaned.detail
    assert "make clean" in orphaned.fix
    with open(tmp_path / "pool" / "keeper.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (kept,) = check_pool(settings, mp)
    assert kept.level == "ok" and "keeper running; 2 ready VM(s)" in kept.detail


class CreatingMultipass:
    """A Multipass stand-in whose clone, while the pool VM is being created, lets a run's opportunistic reap
    look at the host (what `make bench` caught: the reap deleted the keeper's VM in the making)."""

    def __init__(self, settings):
        self.settings = settings
        self.cli = self
        self.existing: dict[str, str] = {}
        self.deleted: list[str] = []
        self.reports = []

    def clone(self, golden, name, timeout):
        from agentvm.host.reaper import Reaper

        self.existing[name] = "Stopped"
        self.reports.append(Reaper(self.settings, self).reap())

    def start(self, name, timeout):
        self.existing[name] = "Running"

    def exec(self, name, argv, timeout):  # cloud-init status --wait: done
        return types.SimpleNamespace(rc=0, stdout="", stderr="")

    def instances(self):
        return dict(self.existing)

    def delete(self, name, attempts=3, timeout=300):
        from agentvm.multipass import DeleteResult

        self.deleted.append(name)
        self.existing.pop(name, None)
        return DeleteResult(True)


def test_a_pool_vm_being_created_is_not_reaped(tmp_path):
    settings = Settings.load({"AGENTVM_STATE_DIR": str(tmp_path), "AGENTVM_PREFIX": "p"})
    mp = CreatingMultipass(settings)
    vm = Pool(settings, mp).create_one("m1")
    assert mp.deleted == []  # the reap during its creation left it alone
    assert mp.reports[0].alive == [vm.name] and mp.reports[0].deleted == []
    assert (tmp_path / "pool" / "ready" / f"{vm.name}.json").exists()
    assert not (tmp_path / "alive" / f"{vm.name}.lock").exists()  # held only while it was being created
