"""POST /webhook: auth, limits, parse once, commit to the inbox; 200 only once it is durable.

Planning (route, inhibit, dedup, outbox) follows from the inbox table in router/planner.py,
with the payload as parsed here.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from router import auth
from router.config import RouterConfig, format_path
from router.errors import BodyRefused, PayloadError, StoreError
from router.logs import event
from router.metrics import IntakeMetrics
from router.models import WebhookPayload
from router.serving import body_refusal, json_dumps, read_body, refusal

log = logging.getLogger("router.intake")
# Correlation ids: 64 random bits name a payload in logs and the API; they need to be unique,
# not secret, so a seeded PRNG does (uuid4 asked the kernel for 16 bytes per webhook).
_ids = random.Random()


@dataclass
class Intake:
    """What POST /webhook needs, given explicitly by the app (router/app.py).

    `config()` is the config running now; `accept(body, received_at, correlation_id, payload)`
    returns once the payload is durable in the inbox, or raises StoreError (answered 503);
    `backlog()` counts payloads accepted and not planned yet; `clock()` is aware UTC;
    `on_accepted(correlation_id, alerts)` is told of each payload answered 200.
    `server.max_backlog` bounds the backlog with the commits under way (`accepting`) counted:
    requests that arrive together cannot all pass it before any of them is committed.
    """

    config: Callable[[], RouterConfig]
    accept: Callable[[bytes, datetime, str, WebhookPayload], Awaitable[None]]
    backlog: Callable[[], int]
    metrics: IntakeMetrics
    clock: Callable[[], datetime]
    on_accepted: Callable[[str, int], None] | None = None
    accepting: int = field(default=0, init=False)  # accept() calls not returned yet


INTAKE = web.AppKey("intake", Intake)


def _refuse(
    status: int,
    reason: str,
    message: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    resp = refusal(status, reason, message, extra)
    resp.headers.update(headers or {})
    return resp


def parse_payload(content_type: str, body: bytes) -> WebhookPayload:
    """Body bytes -> payload, or PayloadError with the HTTP status and a message that says where."""
    if content_type != "application/json":
        raise PayloadError(
            415,
            "content_type",
            f"expected Content-Type application/json, got {content_type or 'none'!r}",
        )
    # Standard JSON only, as the store reads it back (orjson): NaN, Infinity, invalid UTF-8
    # and lone surrogates are refused here rather than accepted and unreadable later.
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(
            400, "invalid_json", f"invalid JSON: {_why_invalid(body, exc)}"
        ) from None
    try:
        return WebhookPayload.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"path": format_path(tuple(e["loc"])) or "(body)", "error": e["msg"]}
            for e in exc.errors(include_url=False)[:20]
        ]
        first = problems[0]
        raise PayloadError(
            422,
            "schema",
            f"not an Alertmanager v4 payload: {first['path']}: {first['error']}",
            problems,
        ) from None


def _why_invalid(body: bytes, exc: orjson.JSONDecodeError) -> str:
    """orjson's reason, unless only its stricter number rules refuse the body (Python's json
    reads it): orjson then says "unexpected character", which does not tell what to fix.
    A lone surrogate (also read by Python's json) is named by orjson itself."""
    if "surrogate" in str(exc):
        return str(exc)
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return str(exc)
    return (
        "numbers must be finite and fit in 64 bits (NaN, Infinity and larger integers are refused)"
    )


async def handle_webhook(request: web.Request) -> web.Response:
    """POST /webhook: 200 with the correlation id once the payload is committed; 401, 4xx
    with what is wrong, or 503 (backlog full, store failing) otherwise."""
    intake = request.app[INTAKE]
    config, metrics = intake.config(), intake.metrics
    try:
        auth.require(request, config.server.auth)
    except web.HTTPUnauthorized:
        metrics.rejected.labels("unauthorized").inc()
        event(log, logging.WARNING, "webhook_rejected", reason="unauthorized", peer=request.remote)
        raise
    try:
        body = await read_body(request, config.server.max_body_bytes, "server.max_body_bytes")
    except BodyRefused as exc:
        metrics.rejected.labels(exc.reason).inc()
        event(log, logging.WARNING, "webhook_rejected", reason=exc.reason, error=str(exc))
        return body_refusal(exc)
    try:
        content_type = request.content_type if "Content-Type" in request.headers else ""
        payload = parse_payload(content_type, body)
    except PayloadError as exc:
        extra = {"problems": exc.problems} if exc.problems else {}
        metrics.rejected.labels(exc.reason).inc()
        event(log, logging.WARNING, "webhook_rejected", reason=exc.reason, error=str(exc))
        return _refuse(exc.status, exc.reason, str(exc), extra)

    # A payload committed and not yet returned from accept() counts twice here, for a moment:
    # the bound may refuse one early, never let one more in.
    backlog_limit, backlog = config.server.max_backlog, intake.backlog() + intake.accepting
    if backlog >= backlog_limit:
        # Alertmanager retries later; what is already accepted is being planned meanwhile.
        metrics.rejected.labels("backlog").inc()
        event(log, logging.WARNING, "webhook_rejected", reason="backlog", limit=backlog_limit)
        return _refuse(
            503,
            "backlog",
            f"{backlog} payloads are waiting to be planned or committed (server.max_backlog"
            f" {backlog_limit}); retry later",
            headers={"Retry-After": "5"},
        )
    correlation_id = f"{_ids.getrandbits(64):016x}"
    intake.accepting += 1
    try:
        await intake.accept(body, intake.clock(), correlation_id, payload)
    except StoreError as exc:
        metrics.rejected.labels("store").inc()
        event(
            log, logging.ERROR, "webhook_not_stored", error=str(exc), correlation_id=correlation_id
        )
        return _refuse(
            503, "store", "could not store the payload; retry", {"correlation_id": correlation_id}
        )
    finally:
        intake.accepting -= 1
    if intake.on_accepted is not None:
        intake.on_accepted(correlation_id, len(payload.alerts))
    metrics.payloads.inc()
    for status, count in Counter(a.status for a in payload.alerts).items():
        metrics.alerts.labels(status).inc(count)
    event(
        log,
        logging.INFO,
        "webhook_accepted",
        correlation_id=correlation_id,
        receiver=payload.receiver,
        group_key=payload.groupKey,
        status=payload.status,
        alerts=len(payload.alerts),
    )
    return web.json_response(
        {"status": "accepted", "correlation_id": correlation_id, "alerts": len(payload.alerts)},
        dumps=json_dumps,
    )
