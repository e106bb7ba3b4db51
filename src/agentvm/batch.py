"""``make batch PROMPTS=prompts.yaml``: many runs in parallel within the host-wide cap, one summary file.

Each item is an ordinary ``agentvm run`` process, so it takes its place in the host's FIFO queue like any
other run; a failing item does not stop the others.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentvm.errors import USAGE_EXIT, UsageError
from agentvm.request import REPO, new_run_id

KEYS = {
    "prompt": None,
    "prompt_file": "PROMPT_FILE",
    "agent": "AGENT",
    "agent_command": "AGENT_COMMAND",
    "timeout": "TIMEOUT",
    "workspace": "WORKSPACE",
    "model": "MODEL",
    "max_turns": "MAX_TURNS",
}
PATH_KEYS = ("prompt_file", "workspace")


@dataclass
class Item:
    index: int
    env: dict[str, str]
    prompt: bytes | None
    label: str
    result: dict[str, Any] = field(default_factory=dict)


def _item(index: int, raw: Any, base: Path, defaults: Mapping[str, Any]) -> Item:
    if isinstance(raw, str):
        raw = {"prompt": raw}
    if not isinstance(raw, dict):
        raise UsageError(f"PROMPTS item {index}: give a prompt text or a mapping with prompt/prompt_file")
    data = {**defaults, **raw}
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise UsageError(f"PROMPTS item {index}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    if bool(data.get("prompt")) == bool(data.get("prompt_file")):
        raise UsageError(f"PROMPTS item {index}: give exactly one of prompt and prompt_file")
    env = {}
    for key, var in KEYS.items():
        if var is None or data.get(key) in (None, ""):
            continue
        value = str(data[key])
        if key in PATH_KEYS:
            value = str((base / Path(value).expanduser()).resolve())
        env[var] = value
    prompt = str(data["prompt"]).encode() if data.get("prompt") else None
    label = (str(data.get("prompt") or data.get("prompt_file")).strip().splitlines() or [""])[0][:50]
    return Item(index, env, prompt, label)


def load(path: Path) -> list[Item]:
    """Parse and check the whole prompts file before any run starts (UsageError when wrong)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read PROMPTS file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"PROMPTS file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    defaults: Mapping[str, Any] = {}
    if isinstance(doc, dict):
        defaults, doc = doc.get("defaults") or {}, doc.get("prompts")
    if not isinstance(doc, list) or not doc:
        raise UsageError(f"PROMPTS file {path} must hold a non-empty list of prompts (or a mapping with `prompts:`)")
    return [_item(i + 1, raw, path.parent, defaults) for i, raw in enumerate(doc)]


class Batch:
    def __init__(self, items: list[Item], env: Mapping[str, str], parallel: int) -> None:
        self.items = items
        self.env = dict(env)
        self.parallel = max(1, min(parallel, len(items)))
        self._print = threading.Lock()

    def say(self, item: Item, line: str) -> None:
        with self._print:
            print(f"[{item.index}/{len(self.items)}] {line}", file=sys.stderr, flush=True)

    def run_one(self, item: Item) -> None:
        env = {**self.env, **item.env}
        for var in ("PROMPT", "PROMPT_FILE", "KEEP"):
            if var not in item.env:
                env.pop(var, None)
        argv = [sys.executable, "-m", "agentvm.cli", "run", "--json"] + (["-"] if item.prompt is not None else [])
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
        )
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(item.prompt or b"")
        proc.stdin.close()
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        last = ""
        for raw in proc.stderr:
            last = raw.decode(errors="replace").rstrip()
            if last:
                self.say(item, last)
        code = proc.wait()
        reader.join()
        runs_dir = Path(self.env.get("AGENTVM_RUNS_DIR") or REPO / "runs").resolve()
        item.result = _result(item, code, b"".join(out), last, time.monotonic() - started, runs_dir)

    def execute(self) -> None:
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            list(pool.map(self.run_one, self.items))


def _result(item: Item, code: int, stdout: bytes, last_line: str, seconds: float, runs_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads(stdout)
    except ValueError:
        record = None
    if record is None:
        status = {USAGE_EXIT: "usage_error", 5: "queue_timeout", 130: "interrupted"}.get(code, "infra_failed")
        return {
            "index": item.index,
            "prompt": item.label,
            "run_id": None,
            "status": status,
            "exit_code": code,
            "folder": None,
            "error": last_line.removeprefix("agentvm: "),
            "seconds": round(seconds, 3),
        }
    return {
        "index": item.index,
        "prompt": item.label,
        "run_id": record["run_id"],
        "status": record["status"],
        "exit_code": code,
        "folder": str(runs_dir / record["run_id"]),
        "error": (record.get("error") or {}).get("message"),
        "seconds": round(seconds, 3),
    }


def summary(batch_id: str, prompts: Path, items: list[Item], parallel: int, started_at: str, t0: float) -> dict:
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
        "exit_code": 0 if ok else 1,
        "items": [item.result for item in items],
    }


def main(prompts: str, env: Mapping[str, str] = os.environ) -> int:
    from agentvm import slots

    try:
        path = Path(prompts).expanduser().resolve()
        items = load(path)
        parallel = slots.max_vms(env)
    except UsageError as exc:
        print(f"agentvm: {exc}", file=sys.stderr)
        return USAGE_EXIT
    batch_id, started_at, t0 = new_run_id(), dt.datetime.now(dt.UTC).isoformat(), time.monotonic()
    print(f"batch {batch_id}: {len(items)} prompt(s), up to {parallel} at once (MAX_VMS)", file=sys.stderr)
    Batch(items, env, parallel).execute()
    doc = summary(batch_id, path, items, parallel, started_at, t0)
    runs_dir = Path(env.get("AGENTVM_RUNS_DIR") or REPO / "runs").resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    out = runs_dir / f"batch-{batch_id}.json"
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    lines = [f"  {r['index']:>3}  {r['status']:<13} {r['run_id'] or '-':<24} {r['error'] or ''}" for r in doc["items"]]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(doc["counts"].items()))
    print("\n".join(["", *lines, f"batch {batch_id}: {counts}", f"summary: {out}"]), file=sys.stderr)
    return doc["exit_code"]
