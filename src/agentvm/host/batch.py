"""``make batch PROMPTS=prompts.yaml``: many runs in parallel within the host-wide cap, one summary file.

The whole file is validated first — every item as completely as a single run would be (prompt, agent,
credentials, workspace limits, numbers) — and nothing starts when one item is wrong. Each item then runs as
an ordinary ``agentvm run`` process, so it takes its place in the host's FIFO queue like any other run; a
failing item does not stop the others.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentvm import options
from agentvm.errors import Exit, UsageError
from agentvm.multipass import Multipass
from agentvm.options import RunInput
from agentvm.run.request import build_request, check_golden, new_run_id
from agentvm.settings import REPO, Settings
from agentvm.textsafe import clean, one_line
from agentvm.vault import load_vault

MAX_FILE = 64 * 1024 * 1024
PATH_KEYS = ("prompt_file", "workspace")
CHILD_ENV_DROP = ("PROMPT", "PROMPT_FILE", "PROMPTS")


@dataclass
class Item:
    index: int
    inp: RunInput
    label: str
    result: dict[str, Any] = field(default_factory=dict)


def _item(index: int, raw: Any, base: Path, defaults: dict[str, Any]) -> Item:
    where = f"PROMPTS item {index}"
    if isinstance(raw, str):
        raw = {"prompt": raw}
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: give a prompt text or a mapping with prompt/prompt_file")
    data = {**defaults, **raw}
    if bool(data.get("prompt")) == bool(data.get("prompt_file")):
        raise UsageError(f"{where}: give exactly one of prompt and prompt_file")
    for key in PATH_KEYS:
        if isinstance(data.get(key), str) and data[key]:
            data[key] = str((base / Path(data[key]).expanduser()).resolve())
    inp = options.from_mapping(data, where)
    label = one_line(str(data.get("prompt") or data.get("prompt_file")), 50)
    return Item(index, inp, label)


def load(path: Path) -> list[Item]:
    """Parse the prompts file and check its structure (UsageError when wrong)."""
    try:
        with path.open("rb") as fh:
            text = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read PROMPTS file {path}: {exc.strerror}") from None
    if len(text) > MAX_FILE:
        raise UsageError(f"PROMPTS file {path} is larger than {MAX_FILE // 1024 // 1024} MiB")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"PROMPTS file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    defaults: Any = {}
    if isinstance(doc, dict):
        unknown = sorted(set(doc) - {"defaults", "prompts"})
        if unknown:
            raise UsageError(f"PROMPTS file {path}: unknown key {unknown[0]!r} (known: defaults, prompts)")
        defaults, doc = doc.get("defaults") or {}, doc.get("prompts")
    if not isinstance(defaults, dict):
        raise UsageError(f"PROMPTS file {path}: defaults must be a mapping")
    if not isinstance(doc, list) or not doc:
        raise UsageError(f"PROMPTS file {path} must hold a non-empty list of prompts (or a mapping with `prompts:`)")
    return [_item(i + 1, raw, path.parent, defaults) for i, raw in enumerate(doc)]


def validate(settings: Settings, items: list[Item]) -> None:
    """Every item as a run would check it (the golden once), before anything starts."""
    mp = Multipass(settings.multipass_bin, settings.env)
    manifest = check_golden(mp, settings.golden)
    vault = load_vault(settings)
    env_inputs = options.from_env({k: v for k, v in settings.env.items() if k not in CHILD_ENV_DROP})
    for item in items:
        try:
            build_request(settings, item.inp.over(env_inputs), vault=vault, mp=mp, golden_manifest_id=manifest)
        except UsageError as exc:
            raise UsageError(f"PROMPTS item {item.index}: {exc}") from None


def _argv(item: Item, batch_id: str) -> list[str]:
    argv = [sys.executable, "-m", "agentvm", "run", "--json", "--label", f"batch={batch_id}"]
    for option in options.RUN_OPTIONS:
        value = getattr(item.inp, option.name)
        if value is None:
            continue
        if option.kind == "bool":
            if value:
                argv.append(option.flag)
        else:
            argv.append(f"{option.flag}={value}")  # one item: a value starting with - stays a value
    return [*argv, "-"] if item.inp.prompt is not None else argv


class Batch:
    def __init__(self, settings: Settings, items: list[Item], batch_id: str) -> None:
        self.settings = settings
        self.items = items
        self.batch_id = batch_id
        self.parallel = max(1, min(settings.max_vms, len(items)))
        self._print = threading.Lock()

    def say(self, item: Item, line: str) -> None:
        with self._print:
            print(f"[{item.index}/{len(self.items)}] {line}", file=sys.stderr, flush=True)

    def run_one(self, item: Item) -> None:
        env = {k: v for k, v in self.settings.env.items() if k not in CHILD_ENV_DROP}
        started = time.monotonic()
        proc = subprocess.Popen(
            _argv(item, self.batch_id),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        assert proc.stdin and proc.stdout and proc.stderr
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        with proc.stdin:
            proc.stdin.write(item.inp.prompt or b"")
        last = ""
        for raw in proc.stderr:
            last = clean(raw.decode(errors="replace").rstrip())
            if last:
                self.say(item, last)
        code = proc.wait()
        reader.join()
        item.result = _result(item, code, b"".join(out), last, time.monotonic() - started, self.settings.runs_dir)

    def execute(self) -> None:
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            list(pool.map(self.run_one, self.items))


def _result(item: Item, code: int, stdout: bytes, last_line: str, seconds: float, runs_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads(stdout)
    except ValueError:
        record = None
    base = {"index": item.index, "prompt": item.label, "exit_code": code, "seconds": round(seconds, 3)}
    if not isinstance(record, dict):
        names = {Exit.USAGE: "usage_error", Exit.QUEUE_TIMEOUT: "queue_timeout", Exit.INTERRUPTED: "interrupted"}
        return {**base, "run_id": None, "status": names.get(code, "infra_failed"), "folder": None,
                "error": last_line.removeprefix("agentvm: ")}  # fmt: skip
    return {
        **base,
        "run_id": record["run_id"],
        "status": record["status"],
        "folder": str(runs_dir / record["run_id"]),
        "error": (record.get("error") or {}).get("message"),
    }


def summary(
    batch_id: str, prompts: Path, items: list[Item], parallel: int, started_at: str, t0: float
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.result["status"]] = counts.get(item.result["status"], 0) + 1
    ok = counts.get("succeeded", 0) == len(items)
    return {
        "batch_id": batch_id,
        "prompts_file": str(prompts),
        "parallel": parallel,
        "started_at": started_at,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "seconds": round(time.monotonic() - t0, 3),
        "total": len(items),
        "counts": counts,
        "succeeded": ok,
        "exit_code": Exit.SUCCEEDED if ok else Exit.AGENT_FAILED,
        "items": [item.result for item in items],
    }


def main(settings: Settings, prompts: str) -> int:
    if not prompts:
        raise UsageError("make batch: set PROMPTS=prompts.yaml (see docs/operations.md)")
    path = Path(prompts).expanduser().resolve()
    items = load(path)
    validate(settings, items)
    batch_id, started_at, t0 = new_run_id(), dt.datetime.now(dt.UTC).isoformat(), time.monotonic()
    runner = Batch(settings, items, batch_id)
    print(f"batch {batch_id}: {len(items)} prompt(s), up to {runner.parallel} at once (MAX_VMS)", file=sys.stderr)
    runner.execute()
    doc = summary(batch_id, path, items, runner.parallel, started_at, t0)
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    out = settings.runs_dir / f"batch-{batch_id}.json"
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    lines = [
        f"  {r['index']:>3}  {r['status']:<13} {r['run_id'] or '-':<24} {clean(r['error'] or '')}" for r in doc["items"]
    ]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(doc["counts"].items()))
    print("\n".join(["", *lines, f"batch {batch_id}: {counts}", f"summary: {out}"]), file=sys.stderr)
    return int(doc["exit_code"])
