"""Pipeline decisions over real captured payloads: routing, dedup, repeat, resolve, inhibition."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from router.config import parse_config
from router.models import Reason, WebhookPayload
from router.pipeline import Pipeline
from router.render import Renderer
from router.state import Plan, State

from .helpers import fixture_json

T0 = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)

CONFIG = """
storage: {stale_after: 1h}
receivers:
  - name: slack
    repeat_interval: 4h
    slack_configs: [{bot_token: xoxb-1, channel: "#a"}]
  - name: pager
    repeat_interval: 30m
    pagerduty_configs: [{routing_key: k}]
    telegram_configs: [{bot_token: "1:t", chat_id: 1, send_resolved: false}]
  - name: batch
    send_resolved: false
    slack_configs: [{bot_token: xoxb-1, channel: "#batch"}]
route:
  receiver: slack
  routes:
    - matchers: ['team="data"']
      receiver: batch
    - matchers: ['severity="critical"']
      receiver: pager
inhibit_rules:
  - source_matchers: ['alertname="ServiceDown"']
    target_matchers: ['alertname=~"HighLatency|HighErrorRate"']
    equal: [service]
"""


class Harness:
    """A pipeline over an in-memory state, fed with payloads at chosen times."""

    def __init__(self, config: str = CONFIG) -> None:
        ids = (f"inc{n}" for n in itertools.count(1))
        self.pipeline = Pipeline(parse_config(config), lambda: next(ids))
        self.state = State()

    def post(self, payload: dict[str, Any] | str, at: datetime = T0) -> Plan:
        data = fixture_json(payload) if isinstance(payload, str) else payload
        return self.pipeline.ingest(WebhookPayload.model_validate(data), self.state, at, "cid")

    def sweep(self, at: datetime) -> Plan:
        return self.pipeline.sweep(self.state, at, "cid")


def reasons(plan: Plan) -> dict[str, str]:
    return {receiver: reason.value for (receiver, reason), n in plan.reasons.items() if n}


def alert(
    name: str, status: str = "firing", fp: str | None = None, **labels: str
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} on {labels.get('service', '?')}"},
        "startsAt": "2026-11-23T06:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-23T07:00:00Z",
        "generatorURL": "",
        "fingerprint": fp or f"{name}-{'-'.join(labels.values())}",
    }


def payload(group_key: str, *alerts: dict[str, Any], truncated: int = 0) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "receiver": "am",
        "status": "firing" if firing else "resolved",
        "alerts": list(alerts),
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am:9093",
        "groupKey": group_key,
        "truncatedAlerts": truncated,
    }


def test_first_notification_then_alertmanager_resends_are_deduplicated() -> None:
    h = Harness()
    first = h.post("firing-group-3-alerts")
    assert reasons(first) == {"slack": "first"}
    assert [(o.destination.receiver, o.destination.channel) for o in first.outbox] == [
        ("slack", "slack")
    ]
    view = first.outbox[0].view
    assert len(view.firing) == 3 and view.resolved == []
    assert view.firing[0].runbook_url == "https://runbooks.example.com/checkout/high-latency"
    assert view.firing[0].silence_url.startswith(
        "http://alertmanager.example:9093/#/silences/new?filter=%7B"
    )

    again = h.post("firing-group-3-alerts", T0 + timedelta(minutes=5))
    assert reasons(again) == {"slack": "unchanged"}
    assert again.outbox == []


def test_partial_resolve_then_full_resolve_then_refire_opens_a_new_incident() -> None:
    h = Harness()
    opened = h.post("firing-group-3-alerts").outbox[0].view.id

    mixed = h.post("mixed-firing-resolved", T0 + timedelta(minutes=1))
    assert reasons(mixed) == {"slack": "resolved_alerts"}
    view = mixed.outbox[0].view
    assert [a.fingerprint for a in view.resolved] == ["b3a81b17d3185542"]
    assert {a.fingerprint for a in view.firing} == {"aedaedb479cc7e33", "caa074ae7deb267c"}
    assert view.status == "firing"

    done = h.post("resolved-group", T0 + timedelta(minutes=2))
    assert reasons(done) == {"slack": "resolved"}
    view = done.outbox[0].view
    assert view.status == "resolved" and view.id == opened
    assert {a.fingerprint for a in view.resolved} == {"aedaedb479cc7e33", "caa074ae7deb267c"}
    assert h.state.incidents == {}

    # Alertmanager retrying the resolve changes nothing; a new firing is a new incident.
    assert h.post("resolved-group", T0 + timedelta(minutes=3)).outbox == []
    refire = h.post("firing-group-3-alerts", T0 + timedelta(minutes=4))
    assert reasons(refire) == {"slack": "first"}
    assert refire.outbox[0].view.id != opened


def test_repeat_interval_renotifies_an_unchanged_incident_unless_acked() -> None:
    h = Harness()
    h.post("firing-group-3-alerts")
    assert h.post("firing-group-3-alerts", T0 + timedelta(hours=3, minutes=59)).outbox == []
    repeat = h.post("firing-group-3-alerts", T0 + timedelta(hours=4))
    assert reasons(repeat) == {"slack": "repeat"} and len(repeat.outbox) == 1

    incident = next(iter(h.state.incidents.values()))
    incident.acked_by = "alice"
    assert reasons(h.post("firing-group-3-alerts", T0 + timedelta(hours=9))) == {
        "slack": "unchanged"
    }


def test_send_resolved_off_at_receiver_and_channel() -> None:
    h = Harness()
    h.post(payload("g", alert("JobFailed", team="data", service="etl")))
    plan = h.post(payload("g", alert("JobFailed", "resolved", team="data", service="etl")))
    assert reasons(plan) == {"batch": "send_resolved_off"} and plan.outbox == []

    # pager: PagerDuty resolves (receiver default), Telegram has send_resolved: false.
    h.post(payload("p", alert("DiskFull", severity="critical", service="pg")))
    plan = h.post(payload("p", alert("DiskFull", "resolved", severity="critical", service="pg")))
    assert [o.destination.channel for o in plan.outbox] == ["pagerduty"]


def test_alerts_left_out_of_a_complete_payload_leave_the_incident_silently() -> None:
    h = Harness()
    h.post("send-resolved-false-firing")
    plan = h.post("send-resolved-false-resolved-left-out", T0 + timedelta(minutes=1))
    assert reasons(plan) == {"batch": "new_alerts"}
    incident = next(iter(h.state.incidents.values()))
    assert incident.alerts == {"ad816c4ccb51e2e0", "5fec76ceca54bec9"}
    assert plan.outbox[0].view.resolved == []


def test_truncated_payload_does_not_drop_the_alerts_it_left_out() -> None:
    h = Harness()
    a, b, c = (
        alert("DiskFull", fp=f"fp{i}", severity="critical", service="pg", i=str(i))
        for i in range(3)
    )
    h.post(payload("t", a, b, c))
    plan = h.post(payload("t", a, b, truncated=1), T0 + timedelta(minutes=1))
    assert reasons(plan) == {"pager": "unchanged"}
    assert next(iter(h.state.incidents.values())).alerts == {"fp0", "fp1", "fp2"}
    assert h.post("truncated-max-alerts-2").outbox[0].view.truncated_alerts == 2


def test_inhibition_in_the_same_payload_and_across_groups() -> None:
    h = Harness()
    down = alert("ServiceDown", severity="critical", service="search")
    latency = alert("HighLatency", severity="warning", service="search")
    other = alert("HighLatency", severity="warning", service="cart")
    plan = h.post(payload("search", down, latency))
    assert plan.inhibited == 1
    assert h.state.alerts[latency["fingerprint"]].inhibited_by == down["fingerprint"]
    # ServiceDown pages; the latency alert's slack incident holds only an inhibited alert.
    assert reasons(plan) == {"pager": "first", "slack": "inhibited"}
    assert [o.destination.receiver for o in plan.outbox] == ["pager", "pager"]

    # Another group, another sender: still inhibited by the firing source; other service is not.
    plan = h.post(payload("latency-search", latency, other))
    assert reasons(plan) == {"slack": "first"}
    assert [a.labels["service"] for a in plan.outbox[0].view.firing] == ["cart"]


DOWN = alert("ServiceDown", severity="critical", service="search")
LATENCY = alert("HighLatency", severity="warning", service="search")
DOWN_RESOLVED = {**DOWN, "status": "resolved", "endsAt": "2026-11-23T07:01:00Z"}


@pytest.mark.parametrize(
    "timeline",
    [
        pytest.param(
            [
                ("lat", [LATENCY], {"slack": "first"}, None),
                # A source for a target already notified, in another group: inhibited in the
                # source's own plan (Alertmanager judges at each flush), not at the next sweep.
                ("down", [DOWN], {"pager": "first", "slack": "inhibited"}, DOWN),
                # Released when the source resolves; shown firing already, so nothing to tell
                # (as Alertmanager's dedup: the firing set is a subset of the last one sent).
                ("down", [DOWN_RESOLVED], {"pager": "resolved", "slack": "unchanged"}, None),
            ],
            id="source-after-target",
        ),
        pytest.param(
            [
                ("down", [DOWN], {"pager": "first"}, None),
                ("lat", [LATENCY], {"slack": "inhibited"}, DOWN),
                # The source resolves elsewhere: the target is released and told in that plan.
                ("down", [DOWN_RESOLVED], {"pager": "resolved", "slack": "uninhibited"}, None),
            ],
            id="source-resolves-elsewhere",
        ),
        pytest.param(
            [
                ("search", [DOWN, LATENCY], {"pager": "first", "slack": "inhibited"}, DOWN),
                # Resolved in the same payload as a still-firing target: free at once.
                ("search", [DOWN_RESOLVED, LATENCY], {"pager": "resolved", "slack": "first"}, None),
            ],
            id="same-payload",
        ),
    ],
)
def test_inhibition_is_judged_in_the_plan_of_the_payload_that_changes_it(
    timeline: list[tuple[str, list[dict[str, Any]], dict[str, str], dict[str, Any] | None]],
) -> None:
    h = Harness()
    for minute, (group, alerts, decided, source) in enumerate(timeline):
        plan = h.post(payload(group, *alerts), T0 + timedelta(minutes=minute))
        assert reasons(plan) == decided, (minute, group)
        target = h.state.alerts.get(LATENCY["fingerprint"])
        if target is not None:
            assert target.inhibited_by == (source["fingerprint"] if source else None), minute
            assert plan.alerts[LATENCY["fingerprint"]] is target  # written back to the store
        if decided.get("slack") == "uninhibited":
            [told] = [o.view for o in plan.outbox if o.destination.receiver == "slack"]
            assert [a.fingerprint for a in told.firing] == [LATENCY["fingerprint"]]
    assert h.sweep(T0 + timedelta(minutes=10)).alerts == {}  # nothing left for the sweep


def test_inhibited_targets_are_judged_again_after_a_reload() -> None:
    h = Harness(CONFIG.replace("HighLatency|", ""))  # the rule does not cover the target yet
    h.post(payload("down", DOWN))
    assert reasons(h.post(payload("lat", LATENCY))) == {"slack": "first"}
    h.pipeline = Pipeline(parse_config(CONFIG), lambda: "never")
    h.pipeline.attach(h.state)
    swept = h.sweep(T0 + timedelta(minutes=1))
    assert h.state.alerts[LATENCY["fingerprint"]].inhibited_by == DOWN["fingerprint"]
    assert reasons(swept) == {"slack": "inhibited"} and swept.outbox == []


def test_a_reload_without_the_rule_releases_what_it_inhibited() -> None:
    h = Harness()
    h.post(payload("down", DOWN))
    assert reasons(h.post(payload("lat", LATENCY))) == {"slack": "inhibited"}
    config = CONFIG[: CONFIG.index("inhibit_rules:")]
    h.pipeline = Pipeline(parse_config(config), lambda: "never")
    h.pipeline.attach(h.state)
    released = h.sweep(T0 + timedelta(minutes=1))
    assert h.state.alerts[LATENCY["fingerprint"]].inhibited_by is None
    assert reasons(released) == {"slack": "uninhibited"} and len(released.outbox) == 1


WITHOUT_PAGER = (  # CONFIG after a reload that removed the receiver "pager"
    CONFIG.replace("      receiver: pager\n", "      receiver: slack\n")
    .replace("  - name: pager\n    repeat_interval: 30m\n", "  - name: gone\n")
    .replace("    pagerduty_configs: [{routing_key: k}]\n", "")
    .replace('    telegram_configs: [{bot_token: "1:t", chat_id: 1, send_resolved: false}]\n', "")
)
SEARCH_DOWN = alert("ServiceDown", severity="warning", service="search")
SEARCH_LATENCY = alert("HighLatency", severity="critical", service="search")


def reload_without_pager(h: Harness) -> None:
    h.pipeline = Pipeline(parse_config(WITHOUT_PAGER), lambda: "new")
    h.pipeline.attach(h.state)


def resolved(a: dict[str, Any]) -> dict[str, Any]:
    return {**a, "status": "resolved"}


def test_an_incident_whose_receiver_a_reload_removed_is_still_planned() -> None:
    """Its alerts are still judged and it closes when they resolve; it tells no one."""
    h = Harness()
    assert reasons(h.post(payload("lat", SEARCH_LATENCY))) == {"pager": "first"}
    reload_without_pager(h)
    plan = h.post(payload("down", SEARCH_DOWN), T0 + timedelta(minutes=1))  # re-judges "pager"
    assert reasons(plan) == {"slack": "first", "pager": "inhibited"}
    assert [item.destination.receiver for item in plan.outbox] == ["slack"]
    back = h.post(payload("down", resolved(SEARCH_DOWN)), T0 + timedelta(minutes=2))
    assert reasons(back)["pager"] == "unchanged"  # notified before it was inhibited
    gone = h.post(payload("lat", resolved(SEARCH_LATENCY)), T0 + timedelta(minutes=3))
    assert reasons(gone) == {"slack": "unchanged", "pager": "receiver_removed"}
    assert gone.outbox == []
    assert not any(i.receiver == "pager" for i in h.state.incidents.values())  # closed
    assert h.sweep(T0 + timedelta(hours=5)).outbox == []


def test_a_release_with_no_receiver_left_to_tell_is_named() -> None:
    h = Harness()
    h.post(payload("down", SEARCH_DOWN))
    assert reasons(h.post(payload("lat", SEARCH_LATENCY))) == {"pager": "inhibited"}
    reload_without_pager(h)
    released = h.post(payload("down", resolved(SEARCH_DOWN)), T0 + timedelta(minutes=1))
    assert reasons(released) == {"slack": "resolved", "pager": "receiver_removed"}
    assert [item.destination.receiver for item in released.outbox] == ["slack"]


def test_a_stale_source_stops_inhibiting() -> None:
    h = Harness()
    down = alert("ServiceDown", severity="critical", service="search")
    latency = alert("HighLatency", severity="warning", service="search")
    h.post(payload("down", down))
    h.post(payload("lat", latency), T0 + timedelta(minutes=30))
    assert h.sweep(T0 + timedelta(minutes=59)).outbox == []  # source seen 59m ago: fresh
    released = h.sweep(T0 + timedelta(minutes=61))  # stale_after is 1h
    assert reasons(released) == {"slack": "uninhibited"}


def test_an_alert_routed_twice_to_one_receiver_is_in_one_incident() -> None:
    config = """
receivers: [{name: r, slack_configs: [{bot_token: x, channel: c}]}, {name: s}]
route:
  receiver: s
  routes:
    - {matchers: ['a="1"'], receiver: r, continue: true}
    - {matchers: ['b="2"'], receiver: r}
"""
    h = Harness(config)
    plan = h.post(payload("g", alert("X", a="1", b="2")))
    assert len(plan.outbox) == 1 and plan.routed["r"] == 1


ESCALATING = """
receivers:
  - name: team
    slack_configs: [{bot_token: xoxb-1, channel: "#team"}]
    escalate: {after: 10m, to: pager}
  - name: pager
    pagerduty_configs: [{routing_key: k}]
route: {receiver: team}
"""


def test_escalation_fires_once_for_unacked_firing_incidents_only() -> None:
    h = Harness(ESCALATING)
    h.post(payload("a", alert("DiskFull", service="db")))
    h.post(payload("b", alert("CPUHigh", service="api")))
    h.post(payload("c", alert("Flaky", service="web")))
    h.post(payload("c", alert("Flaky", "resolved", service="web")), T0 + timedelta(minutes=1))
    acked = next(i for i in h.state.incidents.values() if i.group_key == "b")
    acked.acked_by = "alice"

    assert h.sweep(T0 + timedelta(minutes=9, seconds=59)).outbox == []
    plan = h.sweep(T0 + timedelta(minutes=10))
    assert sorted((o.destination.receiver, o.destination.channel) for o in plan.outbox) == [
        ("pager", "pagerduty"),
        ("team", "slack"),
    ]
    view = plan.outbox[0].view
    assert view.reason == Reason.ESCALATED and view.escalated_to == "pager"
    assert view.firing[0].labels["alertname"] == "DiskFull"
    assert h.sweep(T0 + timedelta(minutes=30)).outbox == []  # once
    resolved = h.post(
        payload("a", alert("DiskFull", "resolved", service="db")), T0 + timedelta(minutes=31)
    )
    assert sorted((o.destination.receiver, o.view.reason.value) for o in resolved.outbox) == [
        ("pager", "resolved"),
        ("team", "resolved"),
    ]  # the page is told too
    original = next(o.view for o in plan.outbox if o.destination.receiver == "team")
    rendered = Renderer().render("slack", original)["message"]
    assert "⬆️ Escalated to pager: not acknowledged in time" in rendered
