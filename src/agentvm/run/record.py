"""The run record (``result.json``, valid against schemas/result.schema.json), written on every path.

``build()`` assembles it from host facts, the VM's claims and the parsed output; ``write()`` validates it and,
should that ever fail, writes a minimal ``infra_failed`` record instead, so a schema-valid file always exists.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

from agentvm.errors import EXIT_CODES, RunError, Status
from agentvm.settings import REPO

SCHEMA = REPO / "schemas" / "result.schema.json"
SCHEMA_VERSION = 1
_SURROGATE = re.compile("[\ud800-\udfff]")


@functools.cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


def validate(record: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when the record does not follow the contract."""
    _validator().validate(record)


def prompt_digest(prompt: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(prompt).hexdigest(), "bytes": len(prompt)}


def exit_code(error: RunError | None) -> int:
    return EXIT_CODES[Status.SUCCEEDED if error is None else error.status]


def status(error: RunError | None) -> str:
    return str(Status.SUCCEEDED if error is None else error.status)


def location(run_dir: Path, host: str | None = None) -> dict[str, str]:
    """Where the run folder is: this host's name (``AGENTVM_HOST``, else the machine's) and the folder."""
    return {"host": host or socket.gethostname().split(".")[0] or "localhost", "folder": str(run_dir)}


def _encodable(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value


def write(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Validate and write ``record`` (atomically); on a validation failure write the fallback instead.

    Text from the VM can hold lone surrogates (names that are not UTF-8, decoded with surrogateescape; JSON
    escapes such as ``\\udcff``): they are replaced, so the record can always be written and printed."""
    try:
        json.dumps(record, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        record = _encodable(record)
    try:
        validate(record)
    except Exception as exc:
        record = fallback(record, f"the run record failed validation ({type(exc).__name__}: {str(exc)[:300]})")
        validate(record)
    tmp = path.with_name(".result.json.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return record


def fallback(partial: dict[str, Any], message: str) -> dict[str, Any]:
    """A minimal valid record from whatever survived of ``partial``."""
    timings = partial.get("timings") if isinstance(partial.get("timings"), dict) else {}
    total = timings.get("total") if isinstance(timings.get("total"), int | float) else 0.0
    instance = partial.get("instance") if isinstance(partial.get("instance"), dict) else {}
    prompt = partial.get("prompt") if isinstance(partial.get("prompt"), dict) else {}
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": str(partial.get("run_id")),
        "status": str(Status.INFRA_FAILED),
        "exit_code": EXIT_CODES[Status.INFRA_FAILED],
        "agent": {
            "name": str((partial.get("agent") or {}).get("name", "unknown")),
            "version": None,
            "model": None,
            "exit_code": None,
        },
        "prompt": {"sha256": str(prompt.get("sha256", "0" * 64)), "bytes": int(prompt.get("bytes") or 1)},
        "result_text": None,
        "timings": {"total": float(max(0.0, total))},
        "instance": {
            "name": str(instance.get("name", "")),
            "golden": str(instance.get("golden", "")),
            "golden_manifest_id": None,
            "kept": bool(instance.get("kept", False)),
        },
        "retries": [],
        "started_at": str(partial.get("started_at")),
        "finished_at": str(partial.get("finished_at")),
        "error": {"phase": "record", "message": message, "hint": "a bug in agentvm: please report it with ansible.log"},
    }
