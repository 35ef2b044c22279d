"""GET /metrics after real traffic: every counter moved as it should, and no alert label leaks in."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from router.app import create_app
from router.config import load_config

from .chatops.test_slack import CHATOPS, command, slash
from .harness import AUTH, Client, Fakes, config_text, firing_payload, post, settled
from .helpers import fixture_body

RECEIVERS = """
  - name: main
    slack_configs: [{bot_token: xoxb-good, channel: "#alerts", api_url: SLACK}]
    pagerduty_configs: [{routing_key: R0UTINGKEY0000000000000000000000, url: PAGERDUTY}]
"""


async def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith(
        "text/plain; version=0.0.4"
    )
    out = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_counters_follow_the_traffic(fakes: Fakes, make_client: Any) -> None:
    client = await make_client(fakes, RECEIVERS, CHATOPS)
    m = await scrape(client)  # before any traffic: the configured platform's acks at 0
    assert m[("alert_router_acks_total", (("platform", "slack"),))] == 0
    assert ("alert_router_acks_total", (("platform", "telegram"),)) not in m
    fakes.pagerduty.fail_next.append((500, {}))
    incident = (await post(client, fixture_body("firing-group-3-alerts")))["incidents"][0]
    await post(client, fixture_body("firing-group-3-alerts"))  # an Alertmanager re-send
    await client.post("/webhook", data=b"{nope", headers=AUTH)
    await client.post("/webhook", data=b"{}", headers=AUTH)
    await client.post("/webhook", data=b"{}", headers={"Content-Type": "application/json"})
    await settled(client)
    await command(client, slash(incident))
    await settled(client)

    m = await scrape(client)
    assert m[("alert_router_payloads_received_total", ())] == 2
    assert m[("alert_router_payloads_rejected_total", (("reason", "invalid_json"),))] == 1
    assert m[("alert_router_payloads_rejected_total", (("reason", "schema"),))] == 1
    assert m[("alert_router_payloads_rejected_total", (("reason", "unauthorized"),))] == 1
    assert m[("alert_router_alerts_received_total", (("status", "firing"),))] == 6
    assert m[("alert_router_alerts_routed_total", (("receiver", "main"),))] == 6
    assert m[("alert_router_notifications_deduplicated_total", (("receiver", "main"),))] == 1
    main_slack = (("channel", "slack"), ("receiver", "main"))
    main_pd = (("channel", "pagerduty"), ("receiver", "main"))
    assert m[("alert_router_notifications_queued_total", main_slack)] == 2  # first + acked
    assert m[("alert_router_notifications_sent_total", main_slack)] == 2
    assert m[("alert_router_notifications_sent_total", main_pd)] == 2
    assert m[("alert_router_notifications_retried_total", main_pd)] == 1
    assert m[("alert_router_acks_total", (("platform", "slack"),))] == 1
    assert m[("alert_router_delivery_latency_seconds_count", (("channel", "slack"),))] == 2
    assert m[("alert_router_outbox_depth", ())] == 0
    assert m[("alert_router_config_last_reload_successful", ())] == 1
    # SQLite: the one router took the planner lease at its start and keeps it.
    assert m[("alert_router_role", (("role", "planner"),))] == 1
    assert m[("alert_router_role", (("role", "standby"),))] == 0
    assert m[("alert_router_planner_lease_epoch", ())] == 1
    assert m[("alert_router_planner_lease_changes_total", (("change", "taken"),))] == 1
    assert m[("alert_router_planner_lease_changes_total", (("change", "lost"),))] == 0
    [build] = [dict(labels) for name, labels in m if name == "alert_router_build_info"]
    assert build["version"] == "0.1.0" and build["python"].startswith("3.")
    # Bounded cardinality: no alert label (instance, alertname...) ever becomes a metric label.
    label_names = {k for (_, labels) in m for k, _ in labels}
    assert label_names <= {
        "reason",
        "status",
        "receiver",
        "channel",
        "platform",
        "le",
        "version",
        "python",
        "role",
        "change",
    }


async def test_dead_letters_and_backlog_are_visible(fakes: Fakes, make_client: Any) -> None:
    receivers = """
  - name: main
    telegram_configs: [{bot_token: "123456:good-token", chat_id: 999, api_url: TELEGRAM}]
    slack_configs: [{bot_token: xoxb-good, channel: "#alerts", api_url: "REFUSED/api/"}]
"""
    client = await make_client(fakes, receivers)
    await post(client, firing_payload(1, "dead"))
    for _ in range(100):
        m = await scrape(client)
        if m.get(
            (
                "alert_router_notifications_dead_total",
                (("channel", "telegram"), ("receiver", "main")),
            )
        ):
            break
        await asyncio.sleep(0.05)
    assert (
        m[
            (
                "alert_router_notifications_dead_total",
                (("channel", "telegram"), ("receiver", "main")),
            )
        ]
        == 1
    )
    assert m[("alert_router_outbox_dead", ())] == 1
    assert m[("alert_router_outbox_depth", ())] == 1  # Slack unreachable: still waiting
    assert m[("alert_router_outbox_oldest_age_seconds", ())] >= 0


DESTINATION_COUNTERS = (
    "alert_router_notifications_queued_total",
    "alert_router_notifications_sent_total",
    "alert_router_notifications_retried_total",
    "alert_router_notifications_dead_total",
    "alert_router_storm_digests_total",
    "alert_router_claim_takeovers_total",
)


async def test_every_destination_has_its_series_at_zero_from_start_and_reload(
    fakes: Fakes, aiohttp_client: Any, tmp_path: Path
) -> None:
    """The alert rules need them: a destination that never delivered has a sent series at 0 to
    compare with, and a first dead letter is an increase from 0, not a new series at 1."""
    path = tmp_path / "routes.yaml"
    path.write_text(config_text(fakes, tmp_path / "state.db", RECEIVERS))
    client = await aiohttp_client(create_app(load_config(path), config_path=str(path)))
    m = await scrape(client)
    for channel in ("slack", "pagerduty"):
        for name in DESTINATION_COUNTERS:
            assert m[(name, (("channel", channel), ("receiver", "main")))] == 0, name
        assert m[("alert_router_delivery_latency_seconds_count", (("channel", channel),))] == 0
    assert m[("alert_router_alerts_routed_total", (("receiver", "main"),))] == 0
    for reason in ("first", "unchanged", "resolved", "escalated"):
        assert m[("alert_router_decisions_total", (("reason", reason), ("receiver", "main")))] == 0
    assert m[("alert_router_notifications_deduplicated_total", (("receiver", "main"),))] == 0
    assert m[("alert_router_alerts_received_total", (("status", "firing"),))] == 0
    assert m[("alert_router_alerts_received_total", (("status", "resolved"),))] == 0
    assert not any(labels and ("receiver", "db") in labels for _, labels in m)

    path.write_text(
        config_text(
            fakes,
            tmp_path / "state.db",
            RECEIVERS
            + '  - name: db\n    telegram_configs: [{bot_token: "123456:good-token", chat_id: 5, api_url: TELEGRAM}]\n',
        )
    )
    resp = await client.post("/-/reload", headers=AUTH)
    assert resp.status == 200, await resp.text()
    m = await scrape(client)
    for name in DESTINATION_COUNTERS:
        assert m[(name, (("channel", "telegram"), ("receiver", "db")))] == 0, name
        assert m[(name, (("channel", "slack"), ("receiver", "main")))] == 0, name
    assert m[("alert_router_delivery_latency_seconds_count", (("channel", "telegram"),))] == 0
    # A receiver's own channels only: no (db, slack) series.
    assert (
        "alert_router_notifications_sent_total",
        (("channel", "slack"), ("receiver", "db")),
    ) not in m
