"""What the VM says about the run (agent-run.py's summary, the agent's version, the commit count): claims.

Each is read with a size limit and coerced; anything malformed becomes a warning and ``None``. Nothing here
decides the outcome: the host's own clock decides time-outs (outcome.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentvm import textsafe

MAX_CLAIM = 64 * 1024


@dataclass
class Claims:
    exit_code: int | None = None
    seconds: float | None = None
    summary_present: bool = False
    agent_version: str | None = None
    commits: int | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)

    def warn(self, code: str, path: str, message: str) -> None:
        self.warnings.append({"code": code, "path": path, "message": message})


def _read(path: Path, claims: Claims) -> str | None:
    if not path.is_file() or path.is_symlink():
        return None
    with path.open("rb") as fh:
        data = fh.read(MAX_CLAIM + 1)
    if len(data) > MAX_CLAIM:
        claims.warn("claim_too_large", path.name, f"{path.name} is larger than {MAX_CLAIM} bytes: ignored")
        return None
    return data.decode("utf-8", "replace")


def _int(value: Any, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if low <= value <= high else None


def read(folder: Path, summary_name: str = "agent-summary.json") -> Claims:
    claims = Claims()
    text = _read(folder / summary_name, claims)
    if text is not None:
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            claims.summary_present = True
            claims.exit_code = _int(doc.get("exit_code"), -255, 255)
            if claims.exit_code is None:
                claims.warn(
                    "bad_summary",
                    summary_name,
                    f"the VM's exit code {str(doc.get('exit_code'))[:40]!r} is not a number",
                )
            seconds = doc.get("seconds")
            if isinstance(seconds, int | float) and not isinstance(seconds, bool) and 0 <= seconds < 10**7:
                claims.seconds = float(seconds)
        else:
            claims.warn("bad_summary", summary_name, f"{summary_name} from the VM is not a JSON object: ignored")
    version = _read(folder / "agent_version", claims)
    if version is not None:
        claims.agent_version = textsafe.one_line(version, 200) or None
    commits = _read(folder / "commits", claims)
    if commits is not None:
        stripped = commits.strip()
        if stripped.isascii() and stripped.isdigit() and len(stripped) <= 7:
            claims.commits = int(stripped)
        else:
            claims.warn("bad_commits", "commits", f"the commit count {stripped[:40]!r} is not a number: ignored")
    return claims
