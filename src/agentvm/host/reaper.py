"""The reaper (``make clean``, and opportunistically before each run): deletes only what this host's agentvm
state says it created, for runs that are no longer alive.

- An instance is **ours** when ``instances/<name>.json`` of this state folder records it (written before the
  instance is created). Ours and dead (nobody holds its liveness lock): deleted, with its scratch folders.
- **Kept** (``KEEP=1``) instances are listed with the command that deletes them, never reaped unless asked
  (``make clean KEPT=1``).
- **Unknown** instances that match a run or pool name of this prefix but are not recorded here belong to
  another state folder, user or host: listed, not touched — unless ``make clean ALL=1`` and they are older than
  the grace period (``AGENTVM_REAP_GRACE``, from the time in the run id).
- Names are matched by a strict pattern (``<prefix>-run-<yyyymmdd>t<hhmmss>-<6 hex>``,
  ``<prefix>-pool-<same>``), never by prefix alone; the golden and builders only with ``ALL=1``.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentvm.host import egress, slots
from agentvm.host.pool import Pool
from agentvm.host.state import InstanceRecord, StateDir
from agentvm.multipass import Multipass, MultipassError, delete_command
from agentvm.settings import Settings

RUN_ID = r"(?P<stamp>[0-9]{8}t[0-9]{6})-[0-9a-f]{6}"


@dataclass
class Report:
    deleted: list[str] = field(default_factory=list)
    alive: list[str] = field(default_factory=list)
    pooled: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stale_locks: int = 0
    scratch_removed: int = 0


def patterns(prefix: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(run or pool instances, golden and builders) of ``prefix``."""
    p = re.escape(prefix)
    owned = re.compile(rf"^{p}-(?:run|pool)-{RUN_ID}$")
    golden = re.compile(rf"^{p}-golden(?:-build-[0-9]{{8}}t[0-9]{{6}}-[0-9a-f]{{4}}|-verify-[0-9a-f]{{6}})?$")
    return owned, golden


def age_seconds(name: str, now: float | None = None) -> float | None:
    match = re.search(RUN_ID + "$", name)
    if not match:
        return None
    try:
        created = calendar.timegm(time.strptime(match.group("stamp"), "%Y%m%dt%H%M%S"))
    except ValueError:
        return None
    return (now or time.time()) - created


def _remove_rules(rec: InstanceRecord) -> None:
    """The egress rules of a dead run (nothing when it had none or the host cannot have any)."""
    if os.geteuid() == 0 and shutil.which("nft") is not None:
        with contextlib.suppress(egress.EgressError, OSError, ValueError):
            egress.remove(rec.run_id)


def _remove_scratch(rec: InstanceRecord) -> int:
    removed = 0
    for folder in rec.scratch:
        path = Path(folder)
        if path.name.startswith(("agentvm-", ".staging-")) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


class Reaper:
    def __init__(self, settings: Settings, mp: Multipass) -> None:
        self.settings = settings
        self.mp = mp
        self.state = StateDir(settings.state_dir).ensure()
        self.owned, self.golden = patterns(settings.prefix)
        self.pool = Pool(settings, mp)

    def _alive(self, name: str) -> bool:
        return slots.is_locked(self.state.alive_lock(name))

    def _delete(self, name: str, report: Report) -> bool:
        result = self.mp.delete(name, attempts=2)
        if result.ok:
            report.deleted.append(name)
            return True
        report.failed[name] = result.message
        return False

    def reap(
        self, *, include_golden: bool = False, include_unknown: bool = False, include_kept: bool = False
    ) -> Report:
        report = Report()
        records = self.state.records()
        existing = self.mp.instances()
        for name in sorted(existing):
            rec = records.get(name)
            if self.owned.match(name):
                self._one(name, rec, report, include_unknown, include_kept)
            elif include_golden and self.golden.match(name):
                self._delete(name, report)
        for name, rec in records.items():  # records of instances that are gone: their rules and scratch
            if name not in existing and not self._alive(name):
                _remove_rules(rec)
                report.scratch_removed += _remove_scratch(rec)
                self.state.forget(name)
        report.stale_locks = self._stale_locks()
        return report

    def _one(self, name: str, rec: InstanceRecord | None, report: Report, unknown: bool, kept: bool) -> None:
        if self._alive(name):
            report.alive.append(name)
            return
        if rec is not None and rec.kind == "pool" and self.pool.is_pooled(name):
            report.pooled.append(name)
            return
        if rec is None:
            age = age_seconds(name)
            if unknown and age is not None and age > self.settings.reap_grace:
                self._delete(name, report)
            else:
                report.unknown.append(name)
            return
        if rec.kept and not kept:
            report.kept.append(name)
            return
        if self._delete(name, report):
            _remove_rules(rec)
            report.scratch_removed += _remove_scratch(rec)
            self.state.forget(name)
            self.pool.forget(name)

    def _stale_locks(self) -> int:
        removed = 0
        for lock in sorted((self.state.root / "alive").glob("*.lock")):
            removed += slots.remove_if_stale(lock)
        with slots.queue_lock(self.state.root):
            removed += sum(slots.remove_if_stale(t) for t in sorted((self.state.root / "queue").iterdir()))
        return removed


def format_report(report: Report) -> str:
    lines = [f"deleted: {name}" for name in report.deleted]
    lines += [f"kept (run alive): {name}" for name in report.alive]
    lines += [f"kept (warm pool): {name} — `make pool-stop` drains the pool" for name in report.pooled]
    lines += [
        f"kept (KEEP=1): {name} — delete it with `{delete_command(name)}` or `make clean KEPT=1`"
        for name in report.kept
    ]
    lines += [
        f"not ours: {name} (no record in this state folder: another user, state folder or host; "
        "`make clean ALL=1` deletes it once older than AGENTVM_REAP_GRACE)"
        for name in report.unknown
    ]
    lines += [
        f"FAILED to delete {name}: {error} (try `{delete_command(name)}`)" for name, error in report.failed.items()
    ]
    lines.append(
        f"reaped {len(report.deleted)} instance(s), {len(report.alive)} live run(s) untouched, "
        f"{len(report.kept)} kept, {len(report.unknown)} not ours, {report.stale_locks} stale lock(s) and "
        f"{report.scratch_removed} scratch folder(s) removed"
    )
    return "\n".join(lines)


def opportunistic(settings: Settings, mp: Multipass) -> Report | None:
    """Reap before a new run; never fails the run (a best effort)."""
    with contextlib.suppress(MultipassError, OSError, ValueError):
        return Reaper(settings, mp).reap()
    return None
