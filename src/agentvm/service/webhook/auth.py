"""The three ways a route authenticates a delivery. Every comparison of secrets is :func:`hmac.compare_digest`.

- ``github``: ``X-Hub-Signature-256: sha256=<hex of HMAC-SHA256(secret, raw body)>`` (GitHub's scheme).
- ``agentvm``: ``X-Agentvm-Signature: t=<unix seconds>,v1=<hex of HMAC-SHA256(secret, "<t>." + raw body)>``, the
  timestamp within the route's replay window of the receiver's clock (either way). Several ``v1=`` may be given
  (while a secret is rotated); one must match.
- ``bearer``: ``Authorization: Bearer <token>`` (for senders that cannot sign, such as Alertmanager).

Each ``verify_*`` returns None when the delivery is authentic, else a short reason (never a secret).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

SCHEMES = ("github", "agentvm", "bearer")
HEADERS = {"github": "x-hub-signature-256", "agentvm": "x-agentvm-signature", "bearer": "authorization"}
DEFAULT_REPLAY_WINDOW = 300
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_GITHUB = re.compile(r"sha256=([0-9a-fA-F]{64})")
_MAX_HEADER = 1024


def _mac(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), data, hashlib.sha256).hexdigest()


def sign_github(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub would send for ``body``."""
    return f"sha256={_mac(secret, body)}"


def sign_agentvm(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Agentvm-Signature`` value for ``body`` signed at ``timestamp``."""
    return f"t={timestamp},v1={_mac(secret, str(timestamp).encode() + b'.' + body)}"


def verify_github(secret: str, body: bytes, header: str | None) -> str | None:
    if not header:
        return "no X-Hub-Signature-256 header"
    match = _GITHUB.fullmatch(header.strip())
    if match is None:
        return "X-Hub-Signature-256 is not sha256=<64 hex digits>"
    if not hmac.compare_digest(_mac(secret, body).encode(), match.group(1).lower().encode()):
        return "the signature does not match"
    return None


def parse_agentvm(header: str) -> tuple[int, list[str]] | None:
    """``t=<unix>,v1=<hex>[,v1=<hex>...]`` → (t, [hex, ...]); None when malformed (other keys are ignored)."""
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit() or len(value) > 12:
                return None
            timestamp = int(value)
        elif key == "v1":
            if not _HEX64.fullmatch(value):
                return None
            macs.append(value.lower())
    if timestamp is None or not macs:
        return None
    return timestamp, macs


def verify_agentvm(secret: str, body: bytes, header: str | None, now: float, window: int) -> str | None:
    if not header:
        return "no X-Agentvm-Signature header"
    parsed = parse_agentvm(header)
    if parsed is None:
        return "X-Agentvm-Signature is not t=<unix seconds>,v1=<64 hex digits>"
    timestamp, macs = parsed
    expected = _mac(secret, str(timestamp).encode() + b"." + body).encode()
    # every candidate is compared (no early exit that would tell which one matched)
    matched = [hmac.compare_digest(expected, mac.encode()) for mac in macs]
    if not any(matched):
        return "the signature does not match"
    if abs(now - timestamp) > window:
        return f"the signature's timestamp is outside the replay window of {window} s"
    return None


def verify_bearer(token: str, header: str | None) -> str | None:
    if not header:
        return "no Authorization header"
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "the Authorization header is not Bearer <token>"
    if not hmac.compare_digest(token.encode("utf-8"), given.strip().encode("utf-8", "surrogateescape")):
        return "the token does not match"
    return None


def verify(scheme: str, secret: str, body: bytes, headers: Mapping[str, str], now: float, window: int) -> str | None:
    """The delivery's authenticity under ``scheme`` (headers: lower-case names)."""
    header = headers.get(HEADERS[scheme])
    if header is not None and len(header) > _MAX_HEADER:
        return f"the {HEADERS[scheme]} header is too long"
    if scheme == "github":
        return verify_github(secret, body, header)
    if scheme == "agentvm":
        return verify_agentvm(secret, body, header, now, window)
    return verify_bearer(secret, header)
