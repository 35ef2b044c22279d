"""POST /webhook: auth, limits, parse, validate, plan and commit; 200 only once it is durable."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from router import auth
from router.config import format_path
from router.errors import PayloadError, StoreError
from router.logs import event
from router.models import WebhookPayload
from router.runtime import RUNTIME

log = logging.getLogger("router.intake")
BODY_TIMEOUT_S = 10.0


def _refuse(status: int, reason: str, message: str, **extra: Any) -> web.Response:
    body = {"status": "error", "reason": reason, "error": message, **extra}
    return web.json_response(body, status=status, dumps=lambda o: orjson.dumps(o).decode())


def parse_payload(content_type: str, body: bytes) -> WebhookPayload:
    """Body bytes -> payload, or PayloadError with the HTTP status and a message that says where."""
    if content_type != "application/json":
        raise PayloadError(
            415,
            "content_type",
            f"expected Content-Type application/json, got {content_type or 'none'!r}",
        )
    try:
        return WebhookPayload.model_validate_json(body)
    except ValidationError as exc:
        first_error = exc.errors(include_url=False)[0]
        if first_error["type"] == "json_invalid":
            raise PayloadError(400, "invalid_json", f"invalid JSON: {first_error['msg']}") from None
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


async def handle_webhook(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    try:
        auth.require(request, rt.config.server.auth)
    except web.HTTPUnauthorized:
        rt.metrics.rejected.labels("unauthorized").inc()
        event(log, logging.WARNING, "webhook_rejected", reason="unauthorized", peer=request.remote)
        raise
    try:
        # A client that trickles its body (slowloris) is cut off instead of holding a slot.
        body = await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
    except TimeoutError:
        rt.metrics.rejected.labels("timeout").inc()
        return _refuse(408, "timeout", f"the body did not arrive within {BODY_TIMEOUT_S:.0f}s")
    except web.HTTPRequestEntityTooLarge:
        limit = rt.config.server.max_body_bytes
        rt.metrics.rejected.labels("too_large").inc()
        event(log, logging.WARNING, "webhook_rejected", reason="too_large", limit=limit)
        return _refuse(413, "too_large", f"body larger than server.max_body_bytes ({limit} bytes)")
    try:
        content_type = request.content_type if "Content-Type" in request.headers else ""
        payload = parse_payload(content_type, body)
    except PayloadError as exc:
        extra = {"problems": exc.problems} if exc.problems else {}
        rt.metrics.rejected.labels(exc.reason).inc()
        event(log, logging.WARNING, "webhook_rejected", reason=exc.reason, error=str(exc))
        return _refuse(exc.status, exc.reason, str(exc), **extra)

    correlation_id = uuid.uuid4().hex[:16]
    try:
        plan = await rt.store.ingest(payload, rt.clock(), correlation_id)
    except StoreError as exc:
        rt.metrics.rejected.labels("store").inc()
        event(
            log, logging.ERROR, "webhook_not_stored", error=str(exc), correlation_id=correlation_id
        )
        return _refuse(
            503, "store", "could not store the payload; retry", correlation_id=correlation_id
        )
    if plan.outbox and rt.outbox is not None:
        rt.outbox.wake.set()
    rt.metrics.payloads.inc()
    for status, count in Counter(a.status for a in payload.alerts).items():
        rt.metrics.alerts.labels(status).inc(count)
    rt.metrics.observe_plan(plan)
    event(
        log,
        logging.INFO,
        "webhook_accepted",
        correlation_id=correlation_id,
        receiver=payload.receiver,
        group_key=payload.groupKey,
        status=payload.status,
        alerts=len(payload.alerts),
        queued=len(plan.outbox),
        decisions=plan.decisions(),
    )
    return web.json_response(
        {
            "status": "accepted",
            "correlation_id": correlation_id,
            "alerts": len(payload.alerts),
            "incidents": sorted({i.id for i in plan.incidents.values()}),
            "queued": len(plan.outbox),
            "inhibited": plan.inhibited,
            "decisions": plan.decisions(),
        }
    )
