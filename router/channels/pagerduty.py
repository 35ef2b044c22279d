"""PagerDuty Events API v2: trigger, acknowledge and resolve with one dedup_key per incident."""

from __future__ import annotations

from typing import Any

import aiohttp

from router.channels.base import Channel, Delivered, Delivery, Digest, Failed, Message, RetryLater
from router.config import TEMPLATE_STRINGS, PagerDutyConfig
from router.models import IncidentView, Reason
from router.render import Renderer

SUMMARY_MAX = 1024
SEVERITIES = ("critical", "error", "warning", "info")
DETAILS_ALERTS = 20


def dedup_key(incident_id: str) -> str:
    return f"alert-router/{incident_id}"


def action_for(view: IncidentView) -> str:
    if view.status == "resolved":
        return "resolve"
    if view.reason is Reason.ACKED:
        return "acknowledge"
    return "trigger"


class PagerDutyChannel(Channel[PagerDutyConfig]):
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
            "summary": (msg.parts.get("summary") or view.title)[:SUMMARY_MAX],
            "source": self._template(self._source, view, default_source),
            "severity": severity if severity in SEVERITIES else "error",
            "timestamp": first.starts_at.isoformat(),
            "component": labels.get("component") or labels.get("service"),
            "group": labels.get("service") or labels.get("job"),
            "class": labels.get("alertname"),
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
        body["links"] = [{"href": href, "text": text} for href, text in links if href]
        return body

    async def _post(self, body: dict[str, Any]) -> Delivery:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        try:
            async with self._session.post(self.config.url, json=body) as resp:
                text = await resp.text()
                if resp.status in (200, 202):
                    return Delivered(body["dedup_key"])
                if resp.status == 429:
                    after = resp.headers.get("Retry-After")
                    return RetryLater(
                        float(after) if after and after.isdigit() else None,
                        "pagerduty: 429 rate limited",
                    )
                if resp.status >= 500:
                    return RetryLater(None, f"pagerduty: {resp.status} {text[:200]}")
                return Failed(f"pagerduty: {resp.status} {text[:500]}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            return RetryLater(None, f"pagerduty: {type(exc).__name__}: {exc}")

    async def send(self, msg: Message) -> Delivery:
        return await self._post(self.event(msg))

    async def send_digest(self, digest: Digest) -> Delivery:
        # PagerDuty groups by dedup_key itself: each incident keeps its own event, no digest.
        for view in digest.views:
            result = await self.send(self.render(view))
            if not isinstance(result, Delivered):
                return result
        return Delivered("")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
