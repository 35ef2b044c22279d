"""Escalation of unacknowledged incidents: which are due, and which receivers an incident tells.

Pure: `now` is a parameter and nothing here writes; the pipeline marks the incident and queues
its messages. There is no Alertmanager counterpart (Alertmanager neither acknowledges nor
escalates); repeat reminders are dedup's `Reason.REPEAT`, judged when Alertmanager re-sends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from router.config.model import EscalateConfig, ReceiverConfig
from router.state import IncidentState


def escalation_due(incident: IncidentState, rule: EscalateConfig | None, now: datetime) -> bool:
    """Whether `incident` must be escalated now under its receiver's `rule` (None: never).

    Due once: when it was notified firing, is not acknowledged, was not escalated before, and
    has been open for at least `rule.after` (a timedelta) at `now` (an aware datetime).
    """
    return (
        rule is not None
        and incident.status == "firing"
        and not incident.acked_by
        and incident.escalated_at is None
        and bool(incident.notified)
        and now - incident.opened_at >= rule.after
    )


def escalations_due(
    incidents: Iterable[IncidentState], receivers: Mapping[str, ReceiverConfig], now: datetime
) -> list[tuple[IncidentState, EscalateConfig]]:
    """The open incidents due for escalation at `now`, each with its receiver's rule, in order.

    `receivers` maps names to their config; an incident whose receiver is not configured (any
    more) is never due.
    """
    due: list[tuple[IncidentState, EscalateConfig]] = []
    if not any(r.escalate for r in receivers.values()):
        return due
    for incident in incidents:
        receiver = receivers.get(incident.receiver)
        rule = receiver.escalate if receiver is not None else None
        if rule is not None and escalation_due(incident, rule, now):
            due.append((incident, rule))
    return due


def recipients(
    incident: IncidentState, receivers: Mapping[str, ReceiverConfig]
) -> list[ReceiverConfig]:
    """The receivers told about `incident`: its own, then the one it was escalated to, if any.

    Once escalated, the escalation receiver's message follows the incident (acks, resolves).
    A name `receivers` does not hold (removed by a reload) is left out.
    """
    names = [incident.receiver, *([incident.escalated_to] if incident.escalated_to else [])]
    return [receivers[name] for name in names if name in receivers]
