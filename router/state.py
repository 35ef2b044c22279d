"""Alert and incident state, and the Plan a decision returns: plain data, no I/O.

`State` is the working set the store loads at start (firing alerts, open incidents) and keeps in
step with its tables; `Plan` lists what one decision changed, for the store to write in one
transaction. An incident is Alertmanager's notification group (dispatch/dispatch.go aggrGroup)
seen by one of our receivers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from router.models import IncidentView, Reason


@dataclass
class AlertState:
    """One alert as last received, keyed by its Alertmanager fingerprint.

    Timestamps are aware UTC datetimes: `starts_at`/`ends_at` as the sender gave them (`ends_at`
    None when Alertmanager sent its zero time), `first_seen`/`last_seen` when we received it.
    `inhibited_by` is the fingerprint of a firing source that inhibits it, or None;
    `receivers` are our receivers its labels route to, in route-tree order.
    """

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    status: str  # "firing" | "resolved"
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str
    first_seen: datetime
    last_seen: datetime
    inhibited_by: str | None = None
    receivers: list[str] = field(default_factory=list)


IncidentKey = tuple[str, str, str]  # (receiver, Alertmanager receiver, Alertmanager groupKey)


@dataclass
class IncidentState:
    """One notification group of one receiver, from its first firing alert until all resolved.

    `alerts` holds the fingerprints still firing (inhibited ones included); `notified` those
    shown firing in the last notification (None: never notified). Times are aware UTC datetimes.
    `ack_via` is "telegram:<chat>" or "slack:<channel>"; `escalated_to` a receiver name or "".
    """

    id: str
    receiver: str
    am_receiver: str
    group_key: str
    opened_at: datetime
    status: str = "firing"
    resolved_at: datetime | None = None
    alerts: set[str] = field(default_factory=set)  # still firing, inhibited ones included
    notified: set[str] | None = None  # firing alerts in the last notification
    last_notified_at: datetime | None = None
    group_labels: dict[str, str] = field(default_factory=dict)
    common_labels: dict[str, str] = field(default_factory=dict)
    common_annotations: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    truncated_alerts: int = 0
    acked_by: str | None = None
    acked_at: datetime | None = None
    ack_via: str = ""  # "telegram:<chat>" / "slack:<channel>"
    ack_comment: str = ""
    silence_id: str = ""
    escalated_at: datetime | None = None
    escalated_to: str = ""

    @property
    def key(self) -> IncidentKey:
        """(receiver, Alertmanager receiver, Alertmanager groupKey): unique among open ones."""
        return (self.receiver, self.am_receiver, self.group_key)


class Destination(NamedTuple):
    """One channel config of one receiver: the unit of ordering and rate limiting.

    `channel` is the channel kind ("telegram"), `channel_index` the position of the config in
    the receiver's `<kind>_configs` list.
    """

    receiver: str
    channel: str
    channel_index: int

    def __str__(self) -> str:
        """The text "receiver/kind[index]", as logs and errors name a destination."""
        return f"{self.receiver}/{self.channel}[{self.channel_index}]"


@dataclass(frozen=True)
class OutboxItem:
    """One notification to queue: the incident's view for one destination."""

    incident_id: str
    destination: Destination
    view: IncidentView


@dataclass
class Plan:
    """What one payload (or sweep) changed: rows to write and counts for metrics.

    `alerts` and `incidents` are keyed by fingerprint and incident id; `reasons` counts the
    decisions per (receiver, reason); `routed` the alerts per receiver; `inhibited` the firing
    alerts found inhibited.
    """

    alerts: dict[str, AlertState] = field(default_factory=dict)
    incidents: dict[str, IncidentState] = field(default_factory=dict)
    outbox: list[OutboxItem] = field(default_factory=list)
    reasons: Counter[tuple[str, Reason]] = field(default_factory=Counter)  # (receiver, reason)
    routed: Counter[str] = field(default_factory=Counter)
    inhibited: int = 0

    def decisions(self) -> dict[str, list[str]]:
        """receiver -> the reasons decided for its incidents, e.g. {"team-slack": ["first"]}."""
        out: dict[str, list[str]] = {}
        for (receiver, reason), n in sorted(self.reasons.items()):
            out.setdefault(receiver, []).extend([reason.value] * n)
        return out

    def merge(self, other: Plan) -> None:
        """Add `other`'s rows and counts to this plan (its later rows win)."""
        self.alerts.update(other.alerts)
        self.incidents.update(other.incidents)
        self.outbox += other.outbox
        self.reasons.update(other.reasons)
        self.routed.update(other.routed)
        self.inhibited += other.inhibited


@dataclass
class State:
    """The firing alerts and open incidents, indexed for the pipeline."""

    alerts: dict[str, AlertState] = field(default_factory=dict)  # firing alerts only
    incidents: dict[IncidentKey, IncidentState] = field(default_factory=dict)  # open ones only
    # (Alertmanager receiver, groupKey) -> receivers with an open incident for that group
    by_group: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def open(self, incident: IncidentState) -> None:
        """Index an open incident (new, or loaded at start)."""
        self.incidents[incident.key] = incident
        self.by_group.setdefault((incident.am_receiver, incident.group_key), set()).add(
            incident.receiver
        )

    def close(self, incident: IncidentState) -> None:
        """Forget a resolved incident; no error if it was not open."""
        self.incidents.pop(incident.key, None)
        group = (incident.am_receiver, incident.group_key)
        receivers = self.by_group.get(group)
        if receivers is not None:
            receivers.discard(incident.receiver)
            if not receivers:
                del self.by_group[group]

    def open_incident(self, incident_id: str) -> IncidentState | None:
        """The open incident with this id, or None."""
        return next((i for i in self.incidents.values() if i.id == incident_id), None)
