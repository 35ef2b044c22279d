"""Every captured Alertmanager payload, posted in capture order to the app with the shipped
routes.yaml in --dry-run: routing, inhibition, dedup and the rendered notifications."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from router.app import create_app
from router.config import parse_config

from .harness import outcome
from .helpers import ROOT, fixture_body

Client = TestClient[web.Request, web.Application]
AUTH = {"Authorization": "Bearer change-me", "Content-Type": "application/json"}

# (fixture, decisions per receiver, notifications queued): worked out by hand from routes.yaml.
TIMELINE: list[tuple[str, dict[str, list[str]], int]] = [
    ("firing-group-3-alerts", {"team-slack": ["first"]}, 1),
    ("firing-group-3-alerts", {"team-slack": ["unchanged"]}, 0),  # a retry: deduplicated
    ("mixed-firing-resolved", {"team-slack": ["resolved_alerts"]}, 1),
    ("resolved-group", {"team-slack": ["resolved"]}, 1),
    ("truncated-max-alerts-2", {"oncall-pager": ["first"]}, 2),  # PagerDuty + Telegram
    ("truncated-resolved-max-alerts-2", {"oncall-pager": ["resolved"]}, 2),  # all it knew
    (
        "inhibition-source-and-bystander-sent",
        {"oncall-pager": ["first"], "team-slack-info": ["first"]},
        3,
    ),
    ("inhibition-other-service-not-inhibited", {"team-slack": ["first"]}, 1),
    # ServiceDown/search resolves in the same payload that first shows HighLatency/search.
    (
        "inhibition-lifted-source-resolved",
        {"oncall-pager": ["resolved"], "team-slack": ["first"], "team-slack-info": ["unchanged"]},
        3,
    ),
    ("inhibition-only-source-group-sent", {"oncall-pager": ["first"]}, 2),
    ("send-resolved-false-firing", {"team-slack": ["first"]}, 1),
    ("send-resolved-false-resolved-left-out", {"team-slack": ["new_alerts"]}, 1),
    ("minimal-alert-group-by-all", {"blackhole": ["first"]}, 0),  # no channels: nothing to send
    ("retried-after-503", {"team-slack": ["first"]}, 1),
]


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Client:
    text = (ROOT / "routes.yaml").read_text()
    config = parse_config(
        text, file="routes.yaml", base_dir=str(ROOT), env={"ALERT_ROUTER_DB": str(tmp_path / "db")}
    )
    return await aiohttp_client(create_app(config, dry_run=True))


async def post(client: Client, body: bytes) -> dict[str, Any]:
    resp = await client.post("/webhook", data=body, headers=AUTH)
    assert resp.status == 200, await resp.text()
    return await outcome(client, (await resp.json())["correlation_id"], AUTH)


async def incidents_when_delivered(client: Client) -> list[dict[str, Any]]:
    for _ in range(200):  # 10 s at most
        found = (await (await client.get("/api/v1/incidents", headers=AUTH)).json())["incidents"]
        if all(n["state"] in ("sent", "dead") for i in found for n in i["notifications"]):
            return list(found)
        await asyncio.sleep(0.05)
    raise AssertionError(f"notifications not delivered: {found}")


async def test_captured_timeline(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="router.delivery")
    for name, decisions, queued in TIMELINE:
        answer = await post(client, fixture_body(name))
        assert (name, answer["decisions"], answer["queued"]) == (name, decisions, queued)

    # Our own inhibition, across groups: HighErrorRate/payments (which Alertmanager suppressed
    # in the capture) sent by another sender while ServiceDown/payments fires.
    body = orjson.loads(fixture_body("inhibition-only-source-group-sent"))
    target = body["alerts"][0]
    target["labels"] = {**target["labels"], "alertname": "HighErrorRate", "severity": "warning"}
    target["fingerprint"] = "00000000000000ee"
    body["groupKey"] = '{}:{alertname="HighErrorRate", service="payments"}'
    answer = await post(client, orjson.dumps(body))
    assert (answer["decisions"], answer["inhibited"], answer["queued"]) == (
        {"team-slack": ["inhibited"]},
        1,
        0,
    )

    incidents = await incidents_when_delivered(client)
    states = [n["state"] for i in incidents for n in i["notifications"]]
    assert set(states) == {"sent"}
    sent = len(states)
    assert sent == sum(q for _, _, q in TIMELINE)
    rendered = [
        r for r in caplog.records if r.getMessage() in ("dry_run_notification", "dry_run_update")
    ]
    assert len(rendered) == sent
    # The first notification of an incident posts; later ones edit that message.
    assert sum(r.getMessage() == "dry_run_update" for r in rendered) == 7

    alerts = {
        a["fingerprint"]: a
        for a in (await (await client.get("/api/v1/alerts", headers=AUTH)).json())["alerts"]
    }
    assert alerts["00000000000000ee"]["inhibited_by"] == "fa51322adcf0df79"
    assert alerts["a991b15cd3964127"]["inhibited_by"] is None  # HighLatency/search after the lift
    assert alerts["e40491760404a035"]["status"] == "resolved"

    by_channel: dict[str, list[str]] = {}
    for r in rendered:
        fields = r.__dict__["fields"]
        by_channel.setdefault(fields["channel"], []).append(
            fields.get("message") or fields.get("summary") or ""
        )
    # Telegram HTML escapes annotation text Alertmanager sent with < & " (the DiskFull capture).
    disk = next(m for m in by_channel["telegram[0]"] if "DiskFull" in m)
    assert "&lt;" in disk and "<b>CRITICAL: DiskFull</b> ×2" in disk
    assert "… and 2 more alert(s) that Alertmanager did not send (max_alerts)" in disk
    # The partial resolve strikes the resolved alert and keeps the firing ones.
    partial = by_channel["slack[0]"][1]
    assert partial.count("▶ ") == 2 and partial.count("✅ ~") == 1
    # PagerDuty summary: one line.
    assert all("\n" not in s and len(s) <= 1024 for s in by_channel["pagerduty[0]"])
