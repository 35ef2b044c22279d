"""Every Prometheus collector of alert-router, in one place, on a registry of the app's own.

Labels are bounded by routes.yaml (receiver, channel) or by code (reason, status, platform):
never an alert label, so a storm of new label values cannot blow up the series count.
Names follow the Prometheus naming guide (prefix `alert_router_`, base units: `_seconds`,
counters end in `_total`); `/metrics` serves them in the text exposition format 0.0.4.
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from router import __version__
from router.models import Reason

if TYPE_CHECKING:
    from router.config import RouterConfig
    from router.roles import Role
    from router.state import Plan

# Upper bounds in seconds (Prometheus' base unit), 5 ms to an hour: retries make deliveries long.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


PREFIX = "alert_router_"
# Why POST /webhook refused a request (router/intake.py, router/serving.py). Alertmanager retries
# only the 503s (backlog, store): after any other, the group is not notified.
REJECT_REASONS = (
    "unauthorized",
    "too_large",
    "timeout",
    "content_encoding",
    "content_type",
    "invalid_json",
    "schema",
    "backlog",
    "busy",
    "store",
)


class IntakeMetrics:
    """What POST /webhook counts (router/intake.py), registered on the app's `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        p = PREFIX
        self.payloads = Counter(
            f"{p}payloads_received_total", "Webhook payloads accepted (answered 200).", registry=r
        )
        self.rejected = Counter(
            f"{p}payloads_rejected_total",
            "Webhook requests refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.alerts = Counter(
            f"{p}alerts_received_total",
            "Alerts in accepted payloads, by status.",
            ["status"],
            registry=r,
        )
        for status in ("firing", "resolved"):
            self.alerts.labels(status)
        for reason in REJECT_REASONS:  # from 0, so that the first refusal shows as an increase
            self.rejected.labels(reason)


class Metrics:
    """Every collector of the app, on one registry; `intake` holds POST /webhook's.

    Durations are observed in seconds and timestamps set in Unix seconds, Prometheus' base
    units: callers convert a timedelta with `.total_seconds()`.
    """

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = PREFIX
        self.intake = IntakeMetrics(r)
        self.backlog = Gauge(
            f"{p}intake_backlog",
            "Payloads accepted and not planned yet (routing, dedup, outbox).",
            registry=r,
        )
        self.plan_failures = Counter(
            f"{p}plan_failures_total",
            "Planning failures (store errors, retried; or a payload set aside in the store).",
            registry=r,
        )
        self.routed = Counter(
            f"{p}alerts_routed_total", "Alerts routed to a receiver.", ["receiver"], registry=r
        )
        self.inhibited = Counter(
            f"{p}alerts_inhibited_total", "Firing alerts found inhibited on intake.", registry=r
        )
        self.decisions = Counter(
            f"{p}decisions_total",
            "Notify-or-not decisions per incident, by reason.",
            ["receiver", "reason"],
            registry=r,
        )
        self.deduplicated = Counter(
            f"{p}notifications_deduplicated_total",
            "Alertmanager re-sends of an unchanged incident, not notified again.",
            ["receiver"],
            registry=r,
        )
        self.queued = Counter(
            f"{p}notifications_queued_total",
            "Notifications put in the outbox.",
            ["receiver", "channel"],
            registry=r,
        )
        self.sent = Counter(
            f"{p}notifications_sent_total",
            "Notifications the channel accepted.",
            ["receiver", "channel"],
            registry=r,
        )
        self.retried = Counter(
            f"{p}notifications_retried_total",
            "Delivery attempts to be retried (429, 5xx...).",
            ["receiver", "channel"],
            registry=r,
        )
        self.dead = Counter(
            f"{p}notifications_dead_total",
            "Notifications dead-lettered.",
            ["receiver", "channel"],
            registry=r,
        )
        self.takeovers = Counter(
            f"{p}claim_takeovers_total",
            "Notifications claimed by a replica whose claim lease ran out (it died or lost"
            " the database), taken over by this one (PostgreSQL).",
            ["receiver", "channel"],
            registry=r,
        )
        self.digests = Counter(
            f"{p}storm_digests_total",
            "Digest messages sent instead of a flood.",
            ["receiver", "channel"],
            registry=r,
        )
        self.latency = Histogram(
            f"{p}delivery_latency_seconds",
            "From webhook receipt to the channel's acceptance.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox_depth = Gauge(
            f"{p}outbox_depth",
            "Notifications waiting in the outbox (queued or sending).",
            registry=r,
        )
        self.outbox_oldest = Gauge(
            f"{p}outbox_oldest_age_seconds", "Age of the oldest waiting notification.", registry=r
        )
        self.dead_letters = Gauge(
            f"{p}outbox_dead", "Dead-lettered notifications still in the store.", registry=r
        )
        self.acks = Counter(
            f"{p}acks_total",
            "Incidents acknowledged from chat, by platform.",
            ["platform"],
            registry=r,
        )
        self.reload_ok = Gauge(
            f"{p}config_last_reload_successful",
            "1 if the last config (re)load succeeded.",
            registry=r,
        )
        self.reload_time = Gauge(
            f"{p}config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully.",
            registry=r,
        )
        self.role = Gauge(
            f"{p}role",
            "1 for this replica's role (planner: holds the planner lease; standby), 0 for the other.",
            ["role"],
            registry=r,
        )
        self.lease_epoch = Gauge(
            f"{p}planner_lease_epoch",
            "The planner lease's epoch this replica holds (0 on a standby).",
            registry=r,
        )
        self.lease_changes = Counter(
            f"{p}planner_lease_changes_total",
            "Planner lease changes of this replica: taken (became the planner), lost.",
            ["change"],
            registry=r,
        )
        self.role.labels("planner").set(0)
        self.role.labels("standby").set(1)
        for change in ("taken", "lost"):
            self.lease_changes.labels(change)
        self.build = Info(f"{p}build", "Version of alert-router and Python.", registry=r)
        self.build.info({"version": __version__, "python": platform.python_version()})

    def config_loaded(self, ok: bool, timestamp: float) -> None:
        """Record a config load or reload: `ok`, at `timestamp` (Unix seconds)."""
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_time.set(timestamp)

    def declare(self, config: RouterConfig) -> None:
        """Create every labelled series of the config's receivers and channels (and of its
        chat-ops platforms) at 0, at start and at each reload. Without this a destination that
        never delivered has no `notifications_sent_total` series to compare with, and one whose
        first notification is dead-lettered gets a series born at 1, which `increase()` does not
        see. Series of a receiver removed by a reload stay, as counters do."""
        for receiver in config.receivers:
            self.routed.labels(receiver.name)
            self.deduplicated.labels(receiver.name)
            for reason in Reason:
                self.decisions.labels(receiver.name, reason.value)
            for kind, _, _ in receiver.channels():
                for counter in (
                    self.queued,
                    self.sent,
                    self.retried,
                    self.dead,
                    self.digests,
                    self.takeovers,
                ):
                    counter.labels(receiver.name, kind)
                self.latency.labels(kind)
        for chat in ("telegram", "slack"):
            if getattr(config.chatops, chat) is not None:
                self.acks.labels(chat)

    def role_changed(self, role: Role, change: str) -> None:
        """Record a change of this replica's role (router/roles.py): `change` is "taken" or
        "lost"."""
        self.lease_changes.labels(change).inc()
        self.lease_epoch.set(role.epoch)
        self.role.labels("planner").set(int(role.is_planner))
        self.role.labels("standby").set(int(not role.is_planner))

    def observe_plan(self, plan: Plan) -> None:
        """Count what one payload or sweep decided: alerts routed per receiver, alerts inhibited,
        decisions per (receiver, reason), notifications queued per (receiver, channel)."""
        for receiver, n in plan.routed.items():
            self.routed.labels(receiver).inc(n)
        if plan.inhibited:
            self.inhibited.inc(plan.inhibited)
        for (receiver, reason), n in plan.reasons.items():
            if n > 0:
                self.decisions.labels(receiver, reason.value).inc(n)
                if reason.value == "unchanged":
                    self.deduplicated.labels(receiver).inc(n)
        for item in plan.outbox:
            self.queued.labels(item.destination.receiver, item.destination.channel).inc()

    def exposition(self) -> bytes:
        """Every collector in the Prometheus text format 0.0.4, UTF-8 (served at /metrics)."""
        return generate_latest(self.registry)
