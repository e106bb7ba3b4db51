"""The one-screen summary of a run record (printed after a run, by ``make show``); control characters shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentvm.textsafe import clean


def summary(record: dict[str, Any], run_dir: Path) -> str:
    text = clean(str(record.get("result_text") or "")).strip().splitlines()
    lines = [
        "",
        f"status:   {record['status']} (exit {record['exit_code']})",
        f"duration: {record['timings']['total']:.1f} s",
        f"folder:   {clean(str(run_dir))}",
    ]
    error = record.get("error")
    if error:
        lines.append(f"error:    {clean(str(error.get('message', '')))}")
        lines.append(f"what to do: {clean(str(error.get('hint', '')))}")
    warnings = record.get("warnings") or []
    if warnings:
        lines.append(
            f"warnings: {len(warnings)} (see result.json), first: {clean(str(warnings[0].get('message', '')))}"
        )
    if text:
        lines.append("result:")
        lines.extend(f"  {line}" for line in text[:8])
        if len(text) > 8:
            lines.append(f"  ... ({len(text) - 8} more lines in result.json)")
    if record["instance"].get("kept"):
        name = record["instance"]["name"]
        lines.append(f"kept VM:  {name} (get a shell: multipass shell {name}; delete: multipass delete --purge {name})")
    return "\n".join(lines)
