"""Payload -> Plan: route, inhibit, dedup, enrich and outbox rows over the state; no I/O here.

The store calls `Pipeline.ingest` (a payload), `Pipeline.sweep` (time passing) or
`Pipeline.set_ack` inside its transaction with its `State` (router/state.py), writes what the
returned `Plan` lists, and commits. `now` is always a parameter (an aware datetime).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from router.config import ReceiverConfig, RouterConfig
from router.dedup import decide
from router.enrich import Enricher
from router.escalation import escalations_due, recipients
from router.inhibit import Inhibitor, InhibitRule
from router.models import ZERO_TIME, AlertView, IncidentView, Reason, WebhookPayload, WireAlert
from router.routing import Route
from router.state import AlertState, Destination, IncidentState, OutboxItem, Plan, State


class Pipeline:
    """The routing decisions for one loaded config; rebuilt when the config is reloaded.

    `new_id()` returns a fresh incident id. The inhibition index lives here (`attach` fills it
    from the state), so a reload builds a new one under the new rules.
    """

    def __init__(self, config: RouterConfig, new_id: Callable[[], str]) -> None:
        self.config = config
        self.root = Route.from_config(config.route)
        self.receivers: dict[str, ReceiverConfig] = {r.name: r for r in config.receivers}
        self.enricher = Enricher(config.runbooks)
        self.inhibitor = Inhibitor(
            tuple(InhibitRule.from_config(r) for r in config.inhibit_rules),
            config.storage.stale_after,
        )
        self._new_id = new_id

    def attach(self, state: State) -> None:
        """Index the state's firing alerts for inhibition (at start and after a reload).

        Their targets are judged again by the next ingest or sweep, as the rules may have changed.
        """
        for a in state.alerts.values():
            self.inhibitor.observe(a.fingerprint, a.labels, True, a.last_seen)

    # ------------------------------------------------------------ intake

    def ingest(
        self, payload: WebhookPayload, state: State, now: datetime, correlation_id: str
    ) -> Plan:
        """Plan one Alertmanager payload received at `now`; `state` is updated in place.

        Each alert is routed, judged for inhibition once the whole payload is known, and its
        incident (one per receiver and Alertmanager group) decided by dedup. A source that
        came or resolved also re-judges its targets in other incidents in this plan, as
        Alertmanager judges inhibition at each flush (inhibit/inhibit.go, notify/notify.go).
        """
        plan = Plan()
        by_receiver: dict[str, list[AlertState]] = {}
        for wire in payload.alerts:
            alert = self._upsert_alert(state, plan, wire, now)
            receivers = list(dict.fromkeys(r.receiver for r in self.root.match(alert.labels)))
            alert.receivers = receivers
            for name in receivers:
                by_receiver.setdefault(name, []).append(alert)
                plan.routed[name] += 1
        # Inhibition is judged once the whole payload is known: a source may come with its targets.
        for wire in payload.alerts:
            alert = plan.alerts[wire.fingerprint]
            if alert.status == "firing":
                alert.inhibited_by = self.inhibitor.inhibited_by(
                    alert.fingerprint, alert.labels, now
                )
                plan.inhibited += alert.inhibited_by is not None
        affected = [
            a
            for fp in self.inhibitor.take_affected()
            if fp not in plan.alerts and (a := state.alerts.get(fp)) is not None
        ]
        rejudged = self._rejudge(state, plan, affected, now)
        if payload.truncatedAlerts == 0:
            # Open incidents of this group whose alerts are all absent now: they are gone too.
            for receiver in state.by_group.get((payload.receiver, payload.groupKey), ()):
                by_receiver.setdefault(receiver, [])
        for name, alerts in by_receiver.items():
            self._update_incident(state, plan, payload, name, alerts, now, correlation_id)
        for incident, upgrade in rejudged:
            if incident.id not in plan.incidents:  # not decided already with the payload's group
                self._decide(state, plan, incident, [], now, correlation_id, upgrade=upgrade)
        for fp, alert in plan.alerts.items():
            if alert.status != "firing":
                state.alerts.pop(fp, None)
        return plan

    def _upsert_alert(self, state: State, plan: Plan, wire: WireAlert, now: datetime) -> AlertState:
        prev = state.alerts.get(wire.fingerprint)
        if prev is not None and prev.labels != wire.labels:  # a sender that reuses fingerprints
            self.inhibitor.observe(prev.fingerprint, prev.labels, False, now)
        alert = AlertState(
            fingerprint=wire.fingerprint,
            labels=dict(wire.labels),
            annotations=dict(wire.annotations),
            status=wire.status,
            starts_at=wire.startsAt,
            ends_at=None if wire.endsAt <= ZERO_TIME else wire.endsAt,
            generator_url=wire.generatorURL,
            first_seen=prev.first_seen if prev else now,
            last_seen=now,
            inhibited_by=prev.inhibited_by if prev else None,
        )
        if alert.status == "firing":
            state.alerts[alert.fingerprint] = alert
        self.inhibitor.observe(alert.fingerprint, alert.labels, alert.status == "firing", now)
        plan.alerts[alert.fingerprint] = alert
        return alert

    def _update_incident(
        self,
        state: State,
        plan: Plan,
        payload: WebhookPayload,
        receiver: str,
        alerts: list[AlertState],
        now: datetime,
        correlation_id: str,
    ) -> None:
        key = (receiver, payload.receiver, payload.groupKey)
        incident = state.incidents.get(key)
        firing = {a.fingerprint for a in alerts if a.status == "firing"}
        if incident is None:
            if not firing:  # resolved alerts never open an incident (e.g. a re-sent resolve)
                plan.reasons[(receiver, Reason.UNCHANGED)] += 1
                return
            incident = IncidentState(
                self._new_id(), receiver, payload.receiver, payload.groupKey, now
            )
            state.open(incident)
        resolved = {a.fingerprint for a in alerts if a.status == "resolved"} & incident.alerts
        dropped: set[str] = set()
        if payload.truncatedAlerts == 0:
            # A complete payload lists every active alert of the group; the others left it without
            # a resolve we can show (silenced, or resolved while send_resolved is off upstream).
            dropped = incident.alerts - firing - resolved
        incident.alerts = (incident.alerts | firing) - resolved - dropped
        incident.group_labels = dict(payload.groupLabels)
        incident.common_labels = dict(payload.commonLabels)
        incident.common_annotations = dict(payload.commonAnnotations)
        incident.external_url = payload.externalURL
        incident.truncated_alerts = payload.truncatedAlerts
        resolved_states = [plan.alerts[fp] for fp in sorted(resolved)]
        self._decide(state, plan, incident, resolved_states, now, correlation_id)

    def _decide(
        self,
        state: State,
        plan: Plan,
        incident: IncidentState,
        resolved: list[AlertState],
        now: datetime,
        correlation_id: str,
        upgrade: Reason | None = None,
    ) -> None:
        # A reload may have removed the incident's receiver: its state still follows the alerts
        # (so it closes when they resolve), but only an escalation receiver is left to tell.
        targets = recipients(incident, self.receivers)
        active = {fp for fp in incident.alerts if not _inhibited(state, fp)}
        reason = decide(
            notified=incident.notified,
            active=active,
            remaining=incident.alerts,
            resolved={a.fingerprint for a in resolved},
            last_notified_at=incident.last_notified_at,
            acked=incident.acked_by is not None,
            repeat=targets[0].repeat_interval if targets else timedelta.max,
            now=now,
        )
        if upgrade is not None and reason in (Reason.NEW_ALERTS, Reason.FIRST):
            reason = upgrade
        if not targets and reason.notifies:
            reason = Reason.RECEIVER_REMOVED
        if not incident.alerts:
            incident.status, incident.resolved_at = "resolved", now
            state.close(incident)
        plan.incidents[incident.id] = incident
        plan.reasons[(incident.receiver, reason)] += 1
        if not reason.notifies:
            if reason is not Reason.INHIBITED and incident.notified is not None:
                incident.notified &= active  # forget resolved ones without a message
            return
        shown_resolved = [
            a for a in resolved if incident.notified and a.fingerprint in incident.notified
        ]
        view = self._view(state, incident, active, shown_resolved, reason, now, correlation_id)
        queued = 0
        for target in targets:
            for kind, index, cfg in target.channels():
                send_resolved = getattr(cfg, "send_resolved", None)
                if send_resolved is None:
                    send_resolved = target.send_resolved
                if reason in (Reason.RESOLVED, Reason.RESOLVED_ALERTS) and not send_resolved:
                    continue
                plan.outbox.append(
                    OutboxItem(incident.id, Destination(target.name, kind, index), view)
                )
                queued += 1
        if not queued and reason in (Reason.RESOLVED, Reason.RESOLVED_ALERTS):
            plan.reasons[(incident.receiver, reason)] -= 1
            plan.reasons[(incident.receiver, Reason.SEND_RESOLVED_OFF)] += 1
        incident.notified = set(active)
        incident.last_notified_at = now

    def _view(
        self,
        state: State,
        incident: IncidentState,
        active: set[str],
        resolved: list[AlertState],
        reason: Reason,
        now: datetime,
        correlation_id: str,
    ) -> IncidentView:
        firing = sorted((state.alerts[fp] for fp in active), key=lambda a: sorted(a.labels.items()))
        return IncidentView.model_construct(  # built from validated state: no re-validation
            id=incident.id,
            receiver=incident.receiver,
            status="firing" if incident.alerts else "resolved",
            reason=reason,
            group_key=incident.group_key,
            group_labels=incident.group_labels,
            common_labels=incident.common_labels,
            common_annotations=incident.common_annotations,
            external_url=incident.external_url,
            firing=[self._alert_view(a, incident.external_url) for a in firing],
            resolved=[self._alert_view(a, incident.external_url) for a in resolved],
            truncated_alerts=incident.truncated_alerts,
            opened_at=incident.opened_at,
            notified_at=now,
            acked_by=incident.acked_by,
            acked_at=incident.acked_at,
            ack_comment=incident.ack_comment,
            silence_id=incident.silence_id,
            escalated_to=incident.escalated_to,
            correlation_id=correlation_id,
        )

    def _alert_view(self, alert: AlertState, external_url: str) -> AlertView:
        links = self.enricher.links(alert.labels, alert.annotations, external_url)
        return AlertView.model_construct(
            fingerprint=alert.fingerprint,
            status="firing" if alert.status == "firing" else "resolved",
            labels=alert.labels,
            annotations=alert.annotations,
            starts_at=alert.starts_at,
            ends_at=alert.ends_at,
            generator_url=alert.generator_url,
            runbook_url=links.runbook_url,
            dashboard_url=links.dashboard_url,
            silence_url=links.silence_url,
        )

    # ------------------------------------------------------------ time-driven

    def sweep(self, state: State, now: datetime, correlation_id: str) -> Plan:
        """Plan what time changes at `now`: inhibition that lapses, and escalation.

        Inhibited alerts are judged again (a source goes stale after `storage.stale_after`),
        as are the targets of sources indexed since the last plan (after a start or reload);
        released ones are notified with reason `uninhibited`. Then unacknowledged incidents
        past their receiver's `escalate.after` are escalated (router/escalation.py).
        """
        plan = Plan()
        affected = dict.fromkeys(self.inhibitor.take_affected())
        affected.update((fp, None) for fp, a in state.alerts.items() if a.inhibited_by is not None)
        alerts = [a for fp in affected if (a := state.alerts.get(fp)) is not None]
        for incident, upgrade in self._rejudge(state, plan, alerts, now):
            self._decide(state, plan, incident, [], now, correlation_id, upgrade=upgrade)
        plan.merge(self.escalate_due(state, now, correlation_id))
        return plan

    def _rejudge(
        self, state: State, plan: Plan, alerts: list[AlertState], now: datetime
    ) -> list[tuple[IncidentState, Reason | None]]:
        """Judge inhibition again for firing `alerts` not in the payload at hand.

        Returns the open incidents holding an alert whose judgement changed, each with
        `Reason.UNINHIBITED` if one of its alerts was released (else None), to decide again.
        """
        if not alerts:
            return []
        released: set[str] = set()
        changed: set[str] = set()
        for alert in alerts:
            by = self.inhibitor.inhibited_by(alert.fingerprint, alert.labels, now)
            if by == alert.inhibited_by:
                continue
            if by is None:
                released.add(alert.fingerprint)
            elif alert.inhibited_by is None:
                plan.inhibited += 1
            alert.inhibited_by = by
            plan.alerts[alert.fingerprint] = alert
            changed.add(alert.fingerprint)
        if not changed:
            return []
        return [
            (i, None if i.alerts.isdisjoint(released) else Reason.UNINHIBITED)
            for i in state.incidents.values()
            if not i.alerts.isdisjoint(changed)
        ]

    # ------------------------------------------------------------ acknowledgement and escalation

    def set_ack(
        self,
        state: State,
        incident: IncidentState,
        acked_by: str | None,
        now: datetime,
        correlation_id: str,
        *,
        via: str = "",
        comment: str = "",
        silence_id: str = "",
    ) -> Plan:
        """Record (or, with acked_by None, take back) an ack; update every message of the incident."""
        plan = Plan()
        incident.acked_by, incident.acked_at = acked_by, (now if acked_by else None)
        incident.ack_via, incident.ack_comment = (via, comment) if acked_by else ("", "")
        incident.silence_id = silence_id if acked_by else ""
        reason = Reason.ACKED if acked_by else Reason.UNACKED
        self._queue_everywhere(state, plan, incident, reason, now, correlation_id)
        return plan

    def escalate_due(self, state: State, now: datetime, correlation_id: str) -> Plan:
        """Escalate the incidents due at `now` (router/escalation.py), once each: the
        escalation receiver gets the incident and every message says so (`escalated`)."""
        plan = Plan()
        for incident, rule in escalations_due(state.incidents.values(), self.receivers, now):
            incident.escalated_at, incident.escalated_to = now, rule.to
            self._queue_everywhere(state, plan, incident, Reason.ESCALATED, now, correlation_id)
        return plan

    def _queue_everywhere(
        self,
        state: State,
        plan: Plan,
        incident: IncidentState,
        reason: Reason,
        now: datetime,
        correlation_id: str,
    ) -> None:
        active = {fp for fp in incident.alerts if not _inhibited(state, fp)}
        view = self._view(state, incident, active, [], reason, now, correlation_id)
        for receiver in recipients(incident, self.receivers):
            for kind, index, _ in receiver.channels():
                dest = Destination(receiver.name, kind, index)
                plan.outbox.append(OutboxItem(incident.id, dest, view))
        plan.incidents[incident.id] = incident
        plan.reasons[(incident.receiver, reason)] += 1


def _inhibited(state: State, fingerprint: str) -> bool:
    alert = state.alerts.get(fingerprint)
    return alert is None or alert.inhibited_by is not None
