"""The receiver's ASGI application (starlette): each delivery passes the checks in order, and nothing is started
unless it passes them all.

404 no such route → 405 not POST → 403 route disabled → 413 body over the route's limit (never read further) →
401 authentication → 415 not ``application/json`` or not JSON (or nested too deep) → 200 ignored (GitHub's ping, or
an event/action the route does not take) → 429 rate limit (with Retry-After) → 422 template error → 503 the service
cannot be reached → 202 ``{"run_id", "created"}``. The run id is ``wh-<route>-<delivery id>``: a delivery posted
again gets the same id, ``created: false``, and starts nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from agentvm.errors import UsageError
from agentvm.service import naming
from agentvm.service.spec import RunSpec
from agentvm.service.webhook import auth, render
from agentvm.service.webhook.routes import DELIVERY_HEADER, Rate, Route

BODY_TIMEOUT = 30.0
MAX_MESSAGE = 200
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,99}")
_SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", *auth.HEADERS.values()})
_MAX_TEMPLATE_HEADERS = 32

Submit = Callable[[RunSpec, str], Awaitable[bool]]  # (spec, workflow id) -> created; raises Unreachable
Log = Callable[[str], None]


class Unreachable(Exception):
    """The service (Temporal) cannot be reached or refused the request: 503."""


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


class Bucket:
    """A token bucket: ``rate.count`` deliveries at once, refilled at ``rate.count`` per ``rate.per`` seconds."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self.tokens = float(rate.count)
        self.last = clock()

    def take(self) -> float | None:
        """None when a delivery may pass (one token taken), else the seconds until one may."""
        now = self.clock()
        self.tokens = min(float(self.rate.count), self.tokens + (now - self.last) * self.rate.per_second)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.rate.per_second


def body_hash(body: bytes) -> str:
    return "sha256-" + hashlib.sha256(body).hexdigest()[:40]


def safe_id(raw: str) -> str:
    """A delivery id as it may appear in a workflow id: itself when plain, else a hash of it."""
    return raw if _SAFE_ID.fullmatch(raw) else "h-" + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()[:40]


def alertmanager_id(payload: Any, body: bytes) -> str:
    """The alert group (groupKey), its status and its newest startsAt: Alertmanager's repeat of the same group state
    is the same delivery; a new alert in the group, or the group resolving, is a new one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("groupKey"), str):
        return body_hash(body)
    starts = [a.get("startsAt") for a in payload.get("alerts") or [] if isinstance(a, dict)]
    newest = max((s for s in starts if isinstance(s, str)), default="")
    key = f"{payload['groupKey']}\n{payload.get('status')}\n{newest}"
    return "am-" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:40]


def delivery_id(route: Route, headers: Mapping[str, str], payload: Any, body: bytes) -> str:
    if route.delivery_id == "alertmanager":
        return alertmanager_id(payload, body)
    raw = headers.get(route.delivery_id or DELIVERY_HEADER)
    return safe_id(raw.strip()) if raw and raw.strip() else body_hash(body)


def workflow_id(route: str, delivery: str) -> str:
    return naming.check_workflow_id(f"wh-{route}-{delivery}")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise _Refused(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise _Refused(413, f"the body is over this route's limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Refused(413, f"the body is over this route's limit of {limit} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), BODY_TIMEOUT)
    except TimeoutError:
        raise _Refused(408, f"the body did not arrive within {BODY_TIMEOUT:.0f} s") from None
    except ClientDisconnect:
        raise _Refused(400, "the client went away before the body was read") from None
    return b"".join(chunks)


def parse_json(headers: Mapping[str, str], body: bytes) -> Any:
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise _Refused(415, f"Content-Type must be application/json, got {media[:60] or 'none'}")

    def constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        return render.items(json.loads(body.decode("utf-8"), parse_constant=constant))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Refused(415, f"the body is not JSON: {_short(exc)}") from None


def _ignored(route: Route, event: str | None, payload: Any) -> str | None:
    if route.auth == "github" and event == "ping":
        return "ping"
    if route.events and event not in route.events:
        return f"event {str(event)[:40]!r} is not one of this route's events"
    action = payload.get("action") if isinstance(payload, dict) else None
    if route.actions and action not in route.actions:
        return f"action {str(action)[:40]!r} is not one of this route's actions"
    return None


def _template_headers(headers: Mapping[str, str]) -> dict[str, str]:
    keep = [(k, v) for k, v in headers.items() if k not in _SECRET_HEADERS and not k.endswith("signature")]
    return {k: v[:1024] for k, v in keep[:_MAX_TEMPLATE_HEADERS]}


@dataclass
class Receiver:
    """The application's state: routes by path, their rate buckets, how runs are submitted, the log."""

    routes: Mapping[str, Route]
    submit: Submit
    env: Mapping[str, str]
    log: Log
    wall: Callable[[], float] = time.time
    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for r in self.routes.values():
            if r.rate is not None:
                self.buckets[r.name] = Bucket(r.rate, self.clock)

    async def handle(self, request: Request) -> Response:
        route = self.routes.get(request.url.path)
        note: dict[str, str] = {"delivery": "-", "run": "-"}
        try:
            if route is None:
                raise _Refused(404, "no such webhook route")
            response = await self._deliver(route, request, note)
        except _Refused as refused:
            response = JSONResponse({"error": str(refused)}, refused.status, headers=refused.headers)
            note["why"] = str(refused) if refused.status != 422 else "template or run option error"
        name = route.name if route is not None else "-"
        why = f" ({note['why']})" if "why" in note else ""
        self.log(f"webhook {name} delivery={note['delivery']} status={response.status_code} run={note['run']}{why}")
        return response

    async def _deliver(self, route: Route, request: Request, note: dict[str, str]) -> Response:
        if request.method != "POST":
            raise _Refused(405, "only POST", {"Allow": "POST"})
        if not route.enabled:
            raise _Refused(403, "this webhook route is disabled")
        body = await read_body(request, route.max_body_bytes)
        headers = request.headers
        reason = auth.verify(route.auth, route.secret, body, headers, self.wall(), route.replay_window)
        if reason is not None:
            raise _Refused(401, f"authentication failed: {reason}")
        payload = parse_json(headers, body)
        delivery = note["delivery"] = delivery_id(route, headers, payload, body)
        event = headers.get("x-github-event") or headers.get("x-agentvm-event")
        ignored = _ignored(route, event, payload)
        if ignored is not None:
            note["why"] = f"ignored: {ignored}"
            return JSONResponse({"ignored": ignored}, 200)
        bucket = self.buckets.get(route.name)
        wait = bucket.take() if bucket is not None else None
        if wait is not None:
            raise _Refused(429, "this route's rate limit is reached", {"Retry-After": str(max(1, math.ceil(wait)))})
        wid = workflow_id(route.name, delivery)
        variables = {
            "payload": payload,
            "route": route.name,
            "delivery": delivery,
            "event": event,
            "headers": _template_headers(headers),
            "received_at": dt.datetime.fromtimestamp(self.wall(), dt.UTC).isoformat(timespec="seconds"),
        }
        spec = await asyncio.to_thread(self._spec, route, variables, delivery)
        try:
            created = await self.submit(spec, wid)
        except Unreachable as exc:
            raise _Refused(503, f"the agentvm service cannot be reached: {_short(exc)}") from None
        note["run"] = wid
        return JSONResponse({"run_id": wid, "created": created}, 202)

    def _spec(self, route: Route, variables: Mapping[str, Any], delivery: str) -> RunSpec:
        from agentvm.service import submitcli

        try:
            prompt = render.render(route.template, variables)
        except Exception as exc:  # any failure of the template is the route's 422, with a short message
            raise _Refused(422, f"the template {route.template_name} failed: {_short(exc)}") from None
        trigger = {"kind": "webhook", "name": route.name, "id": delivery}
        try:
            return submitcli.trigger_spec(prompt, route.options, self.env, trigger)
        except UsageError as exc:
            raise _Refused(422, f"the run request was refused: {_short(exc)}") from None


def application(receiver: Receiver) -> Starlette:
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[StarletteRoute("/{path:path}", receiver.handle, methods=methods)])
