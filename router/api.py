"""Read-only HTTP: alerts, incidents, payload outcomes, /metrics and health (intake's auth)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import orjson
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from router import auth
from router.config import RouterConfig
from router.errors import StoreError
from router.metrics import Metrics
from router.outcomes import Outcomes
from router.roles import Role
from router.serving import json_dumps
from router.store import Store


def _json(data: object) -> web.Response:
    return web.json_response(data, dumps=json_dumps)


@dataclass(frozen=True)
class Reads:
    """What the read API and health endpoints read, given to them explicitly by the app.

    `config()` is the config running now (a reload swaps it); `backlog()` counts payloads
    accepted and not planned; `delivering()` is False once the delivery worker stopped;
    `role` is this replica's (planner or standby).
    """

    store: Store
    outcomes: Outcomes
    metrics: Metrics
    config: Callable[[], RouterConfig]
    clock: Callable[[], datetime]
    backlog: Callable[[], int]
    delivering: Callable[[], bool]
    role: Role


READS = web.AppKey("reads", Reads)

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000
STATUSES = ("firing", "resolved")


class _BadQuery(web.HTTPBadRequest):
    def __init__(self, message: str) -> None:
        body = {"status": "error", "reason": "bad_query", "error": message}
        super().__init__(text=json_dumps(body), content_type="application/json")


def _page_query(request: web.Request, key_size: int) -> tuple[int, list[str] | None, str, str]:
    """(limit, cursor key or None, status, receiver) from ?limit=&cursor=&status=&receiver=;
    the key is `key_size` strings (1 for alerts, 2 for incidents: a cursor of the other list
    is refused). Raises a 400 that says which parameter is wrong."""
    q = request.query
    try:
        limit = int(q.get("limit", DEFAULT_LIMIT))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise _BadQuery(f"limit must be an integer from 1 to {MAX_LIMIT}")
    status = q.get("status", "")
    if status and status not in STATUSES:
        raise _BadQuery(f"status must be one of: {', '.join(STATUSES)}")
    key = None
    if "cursor" in q:
        try:
            key = orjson.loads(base64.urlsafe_b64decode(q["cursor"].encode()))
        except (ValueError, orjson.JSONDecodeError):
            key = None
        if not (
            isinstance(key, list) and len(key) == key_size and all(isinstance(k, str) for k in key)
        ):
            raise _BadQuery("cursor is not one this API gave (use the `next` of the last page)")
    return limit, key, status, q.get("receiver", "")


def _cursor(key: list[str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode()


async def handle_alerts(request: web.Request) -> web.Response:
    """GET /api/v1/alerts?limit=&cursor=&status=&receiver=: a page of alerts by fingerprint,
    and `next`, the cursor of the following page (null on the last one)."""
    r = request.app[READS]
    auth.require(request, r.config().server.auth)
    limit, key, status, receiver = _page_query(request, 1)
    after = key[0] if key else ""
    alerts = await r.store.list_alerts(limit + 1, after, status, receiver)
    more = len(alerts) > limit
    alerts = alerts[:limit]
    return _json({"alerts": alerts, "next": _cursor([alerts[-1]["fingerprint"]]) if more else None})


async def handle_incidents(request: web.Request) -> web.Response:
    """GET /api/v1/incidents?limit=&cursor=&status=&receiver=: a page of incidents, newest
    first, and `next`, the cursor of the following page (null on the last one)."""
    r = request.app[READS]
    auth.require(request, r.config().server.auth)
    limit, key, status, receiver = _page_query(request, 2)
    before = (key[0], key[1]) if key else None
    incidents = await r.store.list_incidents(limit + 1, before, status, receiver)
    more = len(incidents) > limit
    incidents = incidents[:limit]
    last = incidents[-1] if more else None
    return _json(
        {"incidents": incidents, "next": _cursor([last["opened_at"], last["id"]]) if last else None}
    )


async def handle_payload(request: web.Request) -> web.Response:
    """GET /api/v1/payloads/<correlation id>: pending, planned (with decisions) or failed."""
    r = request.app[READS]
    auth.require(request, r.config().server.auth)
    correlation_id = request.match_info["correlation_id"]
    outcome = r.outcomes.get(correlation_id)
    if outcome is None or outcome["state"] == "pending":
        # Not planned by this process (yet): the inbox says whether it still waits (accepted
        # before a restart, or here). A payload this replica accepted and another replica
        # planned (PostgreSQL) has left the inbox: its outcome is that replica's, unknown here.
        with contextlib.suppress(StoreError):
            alerts = await r.store.pending_alerts(correlation_id)
            if alerts is not None:
                outcome = {"correlation_id": correlation_id, "state": "pending", "alerts": alerts}
            else:
                # Planned meanwhile: its outcome was handed to the loop before this answer.
                outcome = r.outcomes.get(correlation_id)
                outcome = outcome if outcome and outcome["state"] != "pending" else None
    if outcome is None:
        return web.json_response(
            {
                "status": "error",
                "error": "unknown correlation id (or forgotten: the last"
                f" {r.outcomes.keep} payloads are kept, by the replica that planned them)",
            },
            status=404,
        )
    return _json(outcome)


async def handle_metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format; outbox gauges are read from the store now."""
    r = request.app[READS]
    try:
        depth, oldest, dead = await r.store.outbox_stats(r.clock())
        r.metrics.outbox_depth.set(depth)
        r.metrics.outbox_oldest.set(oldest)
        r.metrics.dead_letters.set(dead)
        r.metrics.backlog.set(r.backlog())
    except StoreError:
        pass  # the counters still answer; /readyz says the store is failing
    # The 0.0.4 text format: every Prometheus 2.x parses it (prometheus-client's default is 1.0.0).
    return web.Response(
        body=r.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
    )


async def handle_healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 while the process serves (liveness; no dependency is checked)."""
    return _json({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 if webhooks can be accepted and delivered now, else 503 with the
    `reasons` (store not writable or lost, a failed commit, no delivery worker). Either way
    `role` says whether this replica is the planner or a standby (both are ready), `epoch`
    the planner lease's it holds (0 on a standby), `replica` its name."""
    r = request.app[READS]
    problems = []
    if not r.delivering():
        problems.append("delivery worker not running")
    try:
        await asyncio.wait_for(r.store.check_writable(), 2.0)
    except (StoreError, TimeoutError) as exc:
        problems.append(f"store not writable: {str(exc) or 'locked for more than 2s'}")
    # Each cause once: a lost file or lock also makes the write check and intake fail.
    for lost in r.store.files_lost():
        if not any(lost in said for said in problems):
            problems.append(lost)
    cannot_accept = r.store.problem()
    if cannot_accept is not None and not any(cannot_accept in said for said in problems):
        problems.append(f"cannot accept webhooks: {cannot_accept}")
    role = {"role": r.role.name, "epoch": r.role.epoch, "replica": r.store.replica}
    if problems:
        return web.json_response({"status": "not ready", "reasons": problems, **role}, status=503)
    return _json({"status": "ready", "config": r.config().source, **role})
