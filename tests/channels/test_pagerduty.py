"""PagerDuty events always fit the Events API v2 limits (512 KB an event, 1,024 characters a
summary), against a fake that refuses what the real API refuses; what was cut is said."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.channels.pagerduty.channel import MAX_EVENT_BYTES, fit_event

from ..harness import Fakes, post, settled
from .payloads import group_payload

PAGERDUTY = """
  - name: main
    pagerduty_configs: [{routing_key: R0UTINGKEY0000000000000000000000, url: PAGERDUTY}]
"""


async def page(fakes: Fakes, make_client: Any, body: bytes) -> dict[str, Any]:
    """Send one group to PagerDuty; the one event the fake accepted."""
    client = await make_client(fakes, PAGERDUTY)
    await post(client, body)
    [note] = await settled(client)
    assert (note["state"], note["attempts"]) == ("sent", 1), note
    [event] = fakes.pagerduty.events
    assert len(orjson.dumps(event)) <= MAX_EVENT_BYTES
    return event


@pytest.mark.parametrize(
    ("alerts", "value"),
    [
        (1, "d" * 530_000),  # the one alert
        (20, "d" * 34_000),  # the 20 alerts
        (1, "😀" * 140_000),  # 4 bytes each in UTF-8: characters are not bytes
        (20, '\\"\n' * 7_000),  # JSON escapes double the size on the wire
    ],
    ids=["1x530k", "20x34k", "emoji", "escapes"],
)
async def test_a_huge_description_is_cut_to_fit_and_the_event_says_so(
    fakes: Fakes, make_client: Any, alerts: int, value: str
) -> None:
    labels = [({"instance": f"host-{i}"}, {"description": value}) for i in range(alerts)]
    event = await page(fakes, make_client, group_payload(labels, {"alertname": "HighLatency"}))
    details = event["payload"]["custom_details"]
    assert len(details["firing"]) == alerts  # every alert is still listed, its values cut
    assert "512 KB" in details["cut"] and "cut" in details["cut"]
    description = details["firing"][0]["annotations"]["description"]
    assert description.endswith("…") and value.startswith(description[:-1])


async def test_every_unbounded_field_is_bounded(fakes: Fakes, make_client: Any) -> None:
    long = "x" * 5000
    labels = {
        "alertname": long,
        "instance": long,
        "component": long,
        "service": long,
        "job": long,
    }
    annotations = {"summary": long, "runbook_url": "https://runbooks.example.com/" + long}
    event = await page(fakes, make_client, group_payload([(labels, annotations)], labels))
    payload = event["payload"]
    assert len(payload["summary"]) == 1024 and payload["summary"].endswith("…")
    for key in ("source", "component", "group", "class"):
        assert len(payload[key]) <= 1024
    assert "Runbook" not in [link["text"] for link in event["links"]]  # too long for a link
    assert "cut" not in payload["custom_details"]  # it fitted: nothing else cut


def test_fit_event_leaves_alerts_out_when_even_short_values_are_too_many() -> None:
    alert = {
        "labels": {f"label{i:05}": "v" * 200 for i in range(3000)},
        "annotations": {},
        "startsAt": "2026-11-23T06:04:37.75Z",
    }
    body = {
        "routing_key": "k",
        "event_action": "trigger",
        "dedup_key": "alert-router/1",
        "payload": {
            "summary": "s",
            "source": "h",
            "severity": "error",
            "custom_details": {"incident": "1", "firing": [alert] * 20, "not_shown": 5},
        },
    }
    fitted = fit_event(body)
    details = fitted["payload"]["custom_details"]
    assert len(orjson.dumps(fitted)) <= MAX_EVENT_BYTES
    kept = len(details["firing"])
    assert 0 < kept < 20 and details["not_shown"] == 5 + 20 - kept
    assert f"the last {20 - kept} of 20 alerts left out" in details["cut"]
    assert fit_event(fitted) is fitted  # already fits: unchanged


async def test_the_fake_refuses_what_pagerduty_refuses(fakes: Fakes, aiohttp_client: Any) -> None:
    client = await aiohttp_client(fakes.pagerduty.app())
    good = {
        "routing_key": "k",
        "event_action": "trigger",
        "dedup_key": "d",
        "payload": {"summary": "s", "source": "h", "severity": "info"},
    }
    assert (await client.post("/v2/enqueue", json=good)).status == 202
    too_long = {**good, "payload": {**good["payload"], "summary": "s" * 1025}}
    assert (await client.post("/v2/enqueue", json=too_long)).status == 400
    too_big = {**good, "payload": {**good["payload"], "custom_details": {"d": "x" * 524_288}}}
    assert (await client.post("/v2/enqueue", json=too_big)).status == 413


@pytest.mark.parametrize(
    "url", ["see wiki", "/d/x", "javascript:alert(1)", "https://x.example/a b"]
)
async def test_only_absolute_http_urls_become_event_links(
    fakes: Fakes, make_client: Any, url: str
) -> None:
    """Issue 14 item 3 for PagerDuty: `links[].href` is a structured field, so a runbook that is
    not an absolute http(s) URL is no link there (it would open nothing, or run); it stays in
    `custom_details` with the alert's annotations."""
    annotations = {"runbook_url": url, "dashboard_url": "https://grafana.example/d/x"}
    body = group_payload([({"instance": "h"}, annotations)], {"alertname": "A"})
    event = await page(fakes, make_client, body)
    hrefs = {link["text"]: link["href"] for link in event["links"]}
    assert "Runbook" not in hrefs and hrefs["Dashboard"] == "https://grafana.example/d/x"
    assert event["payload"]["custom_details"]["firing"][0]["annotations"]["runbook_url"] == url
