"""A fake PagerDuty Events API v2: POST /v2/enqueue with the real validation and answers.

202 `{"status": "success", "message": "Event processed", "dedup_key": ...}`; 400
`{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}` for a
missing routing key, bad event_action, or a trigger without payload.summary/source/severity or
with a summary over 1024 characters (the limits of developer.pagerduty.com "Send an Alert
Event"); 413 for an event over 512 KB ("Events API v2 Overview", Size Limits: "Events API
payloads are limited to 512 KB"; the status the real API answers is not documented, any 4xx is
final there); 429 and 5xx when a test queues them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SEVERITIES = {"critical", "error", "warning", "info"}
MAX_EVENT_BYTES = 512 * 1024


@dataclass
class FakePagerDuty:
    events: list[dict[str, Any]] = field(default_factory=list)
    fail_next: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0  # answer this late, like a slow network
    attempts: list[float] = field(default_factory=list)  # time.monotonic() of each request

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=4 * MAX_EVENT_BYTES
        )  # so that we answer 413 ourselves
        app.router.add_post("/v2/enqueue", self.enqueue)
        return app

    def incidents(self) -> dict[str, str]:
        """dedup_key -> state after every accepted event, as PagerDuty would show it."""
        state: dict[str, str] = {}
        for e in self.events:
            action = e["event_action"]
            state[e["dedup_key"]] = {
                "trigger": "triggered",
                "acknowledge": "acknowledged",
                "resolve": "resolved",
            }[action]
        return state

    async def enqueue(self, request: web.Request) -> web.Response:
        self.attempts.append(time.monotonic())
        if self.delay_s:
            import asyncio

            await asyncio.sleep(self.delay_s)
        if self.fail_next:
            status, headers = self.fail_next.pop(0)
            return web.Response(
                status=status, headers=headers, text="" if status == 429 else "error"
            )
        raw = await request.read()
        if len(raw) > MAX_EVENT_BYTES:
            return web.json_response(
                {
                    "status": "invalid event",
                    "message": f"Event is {len(raw)} bytes, over the 512 KB limit",
                },
                status=413,
            )
        try:
            event = await request.json()
        except ValueError:
            return _invalid(["Could not parse JSON"])
        errors = problems(event)
        if errors:
            return _invalid(errors)
        self.events.append(event)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]},
            status=202,
        )


def problems(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["Event object must be a JSON object"]
    errors = []
    if not event.get("routing_key"):
        errors.append("'routing_key' is missing or blank")
    if event.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
    if event.get("event_action") != "trigger" and not event.get("dedup_key"):
        errors.append("'dedup_key' is missing or blank")
    if len(str(event.get("dedup_key", ""))) > 255:
        errors.append("'dedup_key' must be at most 255 characters")
    if event.get("event_action") == "trigger":
        payload = event.get("payload") or {}
        if not payload.get("summary"):
            errors.append("'payload.summary' is missing or blank")
        elif len(payload["summary"]) > 1024:
            errors.append("'payload.summary' must be at most 1024 characters")
        if not payload.get("source"):
            errors.append("'payload.source' is missing or blank")
        if payload.get("severity") not in SEVERITIES:
            errors.append(
                "'payload.severity' is invalid (must be one of critical, error, warning, info)"
            )
        for link in event.get("links") or []:
            if not link.get("href"):
                errors.append("'links[].href' is missing or blank")
    return errors


def _invalid(errors: list[str]) -> web.Response:
    return web.json_response(
        {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
        status=400,
    )
