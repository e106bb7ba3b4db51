"""One server-sent event of a mocked stream, and the helpers every API module shares."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """An SSE event: ``data`` (a JSON object, or a literal such as ``[DONE]``), an optional ``event:`` name, and
    ``delta``: the answer text it carries (a slow stream pauses ``chunk_delay`` before every delta but the first)."""

    data: dict[str, Any] | str
    name: str | None = None
    delta: str | None = None

    def encode(self) -> bytes:
        payload = self.data if isinstance(self.data, str) else json.dumps(self.data, ensure_ascii=False)
        head = f"event: {self.name}\n" if self.name else ""
        return f"{head}data: {payload}\n\n".encode()


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
