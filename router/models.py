"""Alertmanager webhook payload v4 (wire shape) and the frozen internal types built from it.

The wire shape is prometheus/alertmanager's `notify/webhook/webhook.go` Message: the template
data of `template/template.go` (Data: receiver, status, alerts, groupLabels, commonLabels,
commonAnnotations, externalURL; Alert: status, labels, annotations, startsAt, endsAt,
generatorURL, fingerprint) plus version "4", groupKey and truncatedAlerts. Field names stay
camelCase as sent; fields Alertmanager may add later are ignored. Times are RFC 3339 and parse
to aware datetimes. A body that does not fit raises pydantic's ValidationError, which intake
turns into a 422 PayloadError.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Alertmanager sends this for a firing alert's endsAt (Go's zero time, "0001-01-01T00:00:00Z";
# types/types.go Alerts() clears the end of an unresolved alert).
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)

LabelSet = dict[str, str]  # label or annotation name -> value
# Alertmanager sends truncatedAlerts as a Go uint64; no group comes near this many alerts, and
# every count stays far within SQLite's signed 64-bit integers (sums included).
MAX_COUNT = 2**31 - 1


class WireAlert(BaseModel):
    """One alert as Alertmanager's webhook sends it (template/template.go Alert).

    `labels` is never empty (an alert has at least its alertname); `fingerprint` is
    Alertmanager's hash of the labels, 16 hex digits today (at most 64 accepted); `endsAt` is
    ZERO_TIME while the alert fires.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: LabelSet = Field(min_length=1)
    annotations: LabelSet = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime
    generatorURL: str = ""
    fingerprint: str = Field(min_length=1, max_length=64)


class WebhookPayload(BaseModel):
    """An Alertmanager webhook body, version "4" (notify/webhook/webhook.go Message).

    One per group per notification: `groupKey` names the group (route and group labels),
    `alerts` are the group's alerts, at most the receiver's `max_alerts`; `truncatedAlerts`
    counts those left out (0 to MAX_COUNT). `status` is "firing" if any alert fires.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    receiver: str
    status: Literal["firing", "resolved"]
    alerts: list[WireAlert]
    groupLabels: LabelSet = Field(default_factory=dict)
    commonLabels: LabelSet = Field(default_factory=dict)
    commonAnnotations: LabelSet = Field(default_factory=dict)
    externalURL: str = ""
    groupKey: str = Field(min_length=1)
    truncatedAlerts: int = Field(default=0, ge=0, le=MAX_COUNT)


class Reason(enum.StrEnum):
    """Why a notification was (or was not) queued; logged and used as a metric label."""

    FIRST = "first"  # a new incident opened
    NEW_ALERTS = "new_alerts"  # more alerts fire in an open incident
    RESOLVED_ALERTS = "resolved_alerts"  # some alerts resolved, others still fire
    RESOLVED = "resolved"  # the incident's last alert resolved
    REPEAT = "repeat"  # unchanged, but repeat_interval has passed
    UNINHIBITED = "uninhibited"  # alerts held back by inhibition are now released
    UNCHANGED = "unchanged"  # Alertmanager re-sent what was already notified: deduplicated
    SEND_RESOLVED_OFF = "send_resolved_off"  # resolved, but the receiver does not send resolved
    INHIBITED = "inhibited"  # every alert of the incident is inhibited
    ACKED = "acked"  # someone acknowledged it: messages are updated everywhere
    UNACKED = "unacked"  # the acknowledgement was taken back
    ESCALATED = "escalated"  # unacknowledged for too long: sent to the escalation receiver
    RECEIVER_REMOVED = (
        "receiver_removed"  # a reload removed the incident's receiver: no one to tell
    )

    @property
    def notifies(self) -> bool:
        """True if this reason puts a new notification in the outbox."""
        return self in _NOTIFYING


_NOTIFYING = frozenset(
    {
        Reason.FIRST,
        Reason.NEW_ALERTS,
        Reason.RESOLVED_ALERTS,
        Reason.RESOLVED,
        Reason.REPEAT,
        Reason.UNINHIBITED,
    }
)


class AlertView(BaseModel):
    """One alert as templates see it, enriched with its links (router/enrich.py).

    `ends_at` is None while the alert fires; the URLs are "" when there is none.
    """

    model_config = ConfigDict(frozen=True)

    fingerprint: str
    status: Literal["firing", "resolved"]
    labels: LabelSet
    annotations: LabelSet
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str
    runbook_url: str = ""
    dashboard_url: str = ""
    silence_url: str = ""


class IncidentView(BaseModel):
    """A snapshot of an incident at notification time: what every channel renders.

    `id` is the incident's short id (the one chat-ops commands take); `firing` and `resolved`
    are its alerts in each state; `truncated_alerts` counts those Alertmanager left out of
    the last payload. Times are aware UTC datetimes; `acked_*` are set once someone
    acknowledged it, `escalated_to` names the escalation receiver once it escalated.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    receiver: str
    status: Literal["firing", "resolved"]
    reason: Reason
    group_key: str
    group_labels: LabelSet
    common_labels: LabelSet
    common_annotations: LabelSet
    external_url: str
    firing: list[AlertView]
    resolved: list[AlertView]
    truncated_alerts: int = 0
    opened_at: datetime
    notified_at: datetime
    acked_by: str | None = None
    acked_at: datetime | None = None
    ack_comment: str = ""
    silence_id: str = ""
    escalated_to: str = ""
    correlation_id: str = ""

    @property
    def severity(self) -> str:
        """The first `severity` label among the alerts (firing first), else the common one or ""."""
        for alert in (*self.firing, *self.resolved):
            if sev := alert.labels.get("severity"):
                return sev
        return self.common_labels.get("severity", "")

    @property
    def title(self) -> str:
        """The group's common alertname, else the alerts' names joined by ", ", else "alerts"."""
        name = self.common_labels.get("alertname") or self.group_labels.get("alertname")
        if name:
            return name
        names = sorted({a.labels.get("alertname", "") for a in (*self.firing, *self.resolved)})
        return ", ".join(n for n in names if n) or "alerts"
