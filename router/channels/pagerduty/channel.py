"""PagerDuty Events API v2: trigger, acknowledge and resolve with one dedup_key per incident.

Limits, from PagerDuty's Events API v2 documentation (developer.pagerduty.com, "Send an Alert
Event" and "Events API v2 Overview", Size Limits): `payload.summary` at most 1,024 characters,
`dedup_key` at most 255, and the whole event at most 512 KB. An event that breaks them is
refused (400/413) and the page is lost, so `fit_event` makes every event fit, saying what it cut.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp
import orjson

from router.channels.base import Channel, Delivered, Delivery, Digest, Failed, Message, RetryLater
from router.channels.pagerduty.config import PagerDutyConfig
from router.config.types import TEMPLATE_STRINGS
from router.models import IncidentView, Reason
from router.render import Renderer, http_url

SUMMARY_MAX = 1024  # characters (PagerDuty's documented limit)
FIELD_MAX = 1024  # characters of source, component, group, class: no documented limit, our bound
MAX_EVENT_BYTES = 512 * 1024  # the documented size limit of one event
EVENT_BUDGET = MAX_EVENT_BYTES - 8 * 1024  # what we fill: room for PagerDuty counting otherwise
LINK_MAX = 2048  # characters of a link's href; a longer one is left out (it is also in details)
SEVERITIES = ("critical", "error", "warning", "info")
DETAILS_ALERTS = 20
VALUE_CAPS = (8192, 1024, 256, 64)  # characters a detail value is cut to, step by step


def dedup_key(incident_id: str) -> str:
    """The Events API dedup_key of an incident: every event of it acts on one PagerDuty alert."""
    return f"alert-router/{incident_id}"


def action_for(view: IncidentView) -> str:
    """The event_action for the incident's state: trigger, acknowledge or resolve."""
    if view.status == "resolved":
        return "resolve"
    if view.reason is Reason.ACKED:
        return "acknowledge"
    return "trigger"


class PagerDutyChannel(Channel[PagerDutyConfig]):
    """Events API v2: one event per notification, deduplicated by PagerDuty per incident."""

    kind = "pagerduty"
    storm_guard = False  # PagerDuty groups by dedup_key itself and pages once per incident

    def __init__(self, config: PagerDutyConfig, renderer: Renderer) -> None:
        super().__init__(config, renderer)
        self._session: aiohttp.ClientSession | None = None
        self._severity = TEMPLATE_STRINGS.from_string(config.severity) if config.severity else None
        self._source = TEMPLATE_STRINGS.from_string(config.source) if config.source else None

    def _template(self, template: Any, view: IncidentView, default: str) -> str:
        if template is None:
            return default
        first = (view.firing or view.resolved)[0]
        try:
            return (
                str(template.render(labels=first.labels, annotations=first.annotations)).strip()
                or default
            )
        except Exception:  # a user template must not lose the page
            return default

    def event(self, msg: Message) -> dict[str, Any]:
        """The Events API v2 body for `msg`, fitted to the size limits (see fit_event)."""
        view = msg.view
        body: dict[str, Any] = {
            "routing_key": self.config.routing_key.get_secret_value(),
            "event_action": action_for(view),
            "dedup_key": dedup_key(view.id),
        }
        if body["event_action"] != "trigger":
            return body
        first = (view.firing or view.resolved)[0]
        severity = self._template(self._severity, view, view.severity.lower())
        labels = first.labels
        default_source = (
            labels.get("instance") or labels.get("job") or labels.get("service") or "alert-router"
        )
        body["payload"] = {
            "summary": _cut(msg.parts.get("summary") or view.title, SUMMARY_MAX),
            "source": _cut(self._template(self._source, view, default_source), FIELD_MAX),
            "severity": severity if severity in SEVERITIES else "error",
            "timestamp": first.starts_at.isoformat(),
            "component": _cut(labels.get("component") or labels.get("service"), FIELD_MAX),
            "group": _cut(labels.get("service") or labels.get("job"), FIELD_MAX),
            "class": _cut(labels.get("alertname"), FIELD_MAX),
            "custom_details": {
                "incident": view.id,
                "receiver": view.receiver,
                "firing": [
                    {
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "startsAt": a.starts_at.isoformat(),
                    }
                    for a in view.firing[:DETAILS_ALERTS]
                ],
                "not_shown": max(0, len(view.firing) - DETAILS_ALERTS) + view.truncated_alerts,
            },
        }
        body["payload"] = {k: v for k, v in body["payload"].items() if v is not None}
        links = [
            (first.runbook_url, "Runbook"),
            (first.dashboard_url, "Dashboard"),
            (first.generator_url, "Source"),
            (first.silence_url, "Silence in Alertmanager"),
        ]
        body["links"] = [  # a structured field: absolute http(s) URLs only (the rest is in details)
            {"href": href, "text": text} for href, text in links if http_url(href, LINK_MAX)
        ]
        return fit_event(body)

    async def _post(self, body: dict[str, Any]) -> Delivery:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        try:
            data = orjson.dumps(body)  # the bytes fit_event measured
            headers = {"Content-Type": "application/json"}
            async with self._session.post(self.config.url, data=data, headers=headers) as resp:
                text = await resp.text()
                if resp.status in (200, 202):
                    return Delivered(body["dedup_key"])
                if resp.status == 429:
                    after = resp.headers.get("Retry-After")
                    return RetryLater(
                        timedelta(seconds=int(after)) if after and after.isdigit() else None,
                        "pagerduty: 429 rate limited",
                    )
                if resp.status >= 500 or resp.status == 408:
                    return RetryLater(None, f"pagerduty: {resp.status} {text[:200]}")
                return Failed(f"pagerduty: {resp.status} {text[:500]}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            return RetryLater(None, f"pagerduty: {type(exc).__name__}: {exc}")

    async def send(self, msg: Message) -> Delivery:
        """Post the event: 2xx Delivered, 429 RetryLater(Retry-After), 408/5xx RetryLater,
        any other status Failed."""
        return await self._post(self.event(msg))

    async def send_digest(self, digest: Digest) -> Delivery:
        """Send each incident of the digest as its own event (PagerDuty groups them itself)."""
        # PagerDuty groups by dedup_key itself: each incident keeps its own event, no digest.
        for view in digest.views:
            result = await self.send(self.render(view))
            if not isinstance(result, Delivered):
                return result
        return Delivered("")

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()


def _cut(text: str | None, limit: int) -> str | None:
    """`text` within `limit` characters, ending in "…" if it was longer."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _event_bytes(body: dict[str, Any]) -> int:
    return len(orjson.dumps(body))


def _cut_alert(alert: dict[str, Any], cap: int) -> dict[str, Any]:
    return {
        "labels": {k[:cap]: _cut(v, cap) for k, v in alert["labels"].items()},
        "annotations": {k[:cap]: _cut(v, cap) for k, v in alert["annotations"].items()},
        "startsAt": alert["startsAt"],
    }


def fit_event(body: dict[str, Any], budget: int = EVENT_BUDGET) -> dict[str, Any]:
    """`body` (an Events API v2 event) made to fit in `budget` bytes of JSON (UTF-8).

    Only `payload.custom_details.firing` can be large (every other field is bounded when the
    event is built): label and annotation values are cut to 8,192, 1,024, 256 then 64
    characters, and alerts are left out from the end, until the event fits; `custom_details.cut`
    then says what was cut and `not_shown` counts the alerts left out. Returns a new dict.
    """
    if _event_bytes(body) <= budget or "payload" not in body:
        return body
    details = body["payload"]["custom_details"]
    alerts: list[dict[str, Any]] = details["firing"]

    def with_alerts(firing: list[dict[str, Any]], cap: int) -> dict[str, Any]:
        left_out = len(alerts) - len(firing)
        note = f"label and annotation values over {cap} characters cut" + (
            f"; the last {left_out} of {len(alerts)} alerts left out" if left_out else ""
        )
        cut = {
            **details,
            "firing": firing,
            "not_shown": details["not_shown"] + left_out,
            "cut": f"{note}, to keep the event under PagerDuty's 512 KB limit",
        }
        return {**body, "payload": {**body["payload"], "custom_details": cut}}

    for cap in VALUE_CAPS:
        firing = [_cut_alert(a, cap) for a in alerts]
        fitted = with_alerts(firing, cap)
        if _event_bytes(fitted) <= budget:
            return fitted
    # Even the shortest values are too many: leave alerts out from the end until it fits.
    while firing:
        excess = _event_bytes(fitted) - budget
        if excess <= 0:
            return fitted
        while firing and excess > 0:
            excess -= len(orjson.dumps(firing.pop())) + 1
        fitted = with_alerts(firing, cap)
    return fitted
