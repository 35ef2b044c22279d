"""Debian's real Alertmanager sends to a running alert-router; the fake channels show what people
would see: routing by severity and component, inhibition, Alertmanager's grouping, resolves,
PagerDuty's dedup_key, and links that open the right Alertmanager page."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import aiohttp

from router.matchers import parse_matchers

from ..harness import Fakes, settled
from .alertmanager import running_alertmanager

TOKEN = "e2e-bearer-token"
ROUTER = """
  - name: pager
    pagerduty_configs: [{routing_key: R0UTINGKEY0000000000000000000000, url: PAGERDUTY}]
    telegram_configs: [{bot_token: "123456:good-token", chat_id: 1001, api_url: TELEGRAM}]
  - name: team
    slack_configs: [{bot_token: xoxb-good, channel: "#alerts", api_url: SLACK}]
  - name: db
    slack_configs: [{bot_token: xoxb-good, channel: "#db-alerts", api_url: SLACK}]
    email_configs: [{to: dba@example.com, from: ar@example.com, smarthost: SMTPHOST, require_tls: false}]
"""
ROUTES = """
route:
  receiver: team
  routes:
    - {matchers: ['component="db"'], receiver: db}
    - {matchers: ['severity="critical"'], receiver: pager}
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [alertname, service]
runbooks:
  - matchers: ['component="db"']
    runbook_url: "https://runbooks.example.com/db/{{ labels.alertname | lower }}"
"""
AM_CONFIG = """
route:
  receiver: router
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: router
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization: {{type: Bearer, credentials: {token}}}
"""


def alert(name: str, ends: datetime | None = None, **labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} on {labels.get('service')}"},
        "startsAt": (now - timedelta(minutes=3)).isoformat(),
        "endsAt": (ends or now + timedelta(minutes=5)).isoformat(),
        "generatorURL": f"http://prometheus.example:9090/graph?g0.expr={name}",
    }


async def eventually(check: Any, timeout_s: float = 20.0) -> Any:
    """Poll check() until it returns something truthy (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not seen within {timeout_s}s")
        await asyncio.sleep(0.1)


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float = 20.0) -> Any:
    """Await check() until it returns something truthy (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (value := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not seen within {timeout_s}s")
        await asyncio.sleep(0.1)
    return value


async def test_alertmanager_to_channels(fakes: Fakes, make_client: Any, tmp_path: Path) -> None:
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, ROUTER, ROUTES)
    webhook = str(client.make_url("/webhook"))
    config = AM_CONFIG.format(url=webhook, token="t")
    async with running_alertmanager(tmp_path, config) as am, aiohttp.ClientSession() as http:

        async def post_alerts(*alerts: dict[str, Any]) -> None:
            async with http.post(f"{am}/api/v2/alerts", json=list(alerts)) as resp:
                assert resp.status == 200, await resp.text()

        page = alert("HighErrorRate", service="api", severity="critical", instance="api-0")
        muted = alert("HighErrorRate", service="api", severity="warning", instance="api-1")
        disk = alert(
            "DiskFull", service="orders-db", component="db", severity="warning", instance="db-0"
        )
        disk2 = alert(
            "DiskFull", service="orders-db", component="db", severity="warning", instance="db-1"
        )
        await post_alerts(page, muted, disk, disk2)

        # Severity routing: the critical one pages (PagerDuty + Telegram).
        [trigger] = await eventually(
            lambda: [e for e in fakes.pagerduty.events if e["event_action"] == "trigger"]
        )
        assert trigger["payload"]["severity"] == "critical"
        assert trigger["payload"]["summary"].startswith(
            "[CRITICAL] HighErrorRate: HighErrorRate on api"
        )
        tg = await eventually(lambda: list(fakes.telegram.messages.values()))
        assert "HighErrorRate" in tg[0].text and "instance=<code>api-0</code>" in tg[0].text

        # Component routing + Alertmanager's grouping: both DiskFull alerts in one Slack message
        # and one email, in the db channel, with the catalogue's runbook link.
        db_post = await eventually(lambda: [p for p in fakes.slack.posts() if p.channel == "C0DB"])
        text = str(db_post[0].payload)
        assert "DiskFull" in text and "×2" in text and "db-0" in text and "db-1" in text
        assert "https://runbooks.example.com/db/diskfull" in text
        mail = await eventually(lambda: fakes.mailbox.messages)
        assert mail[0]["Subject"].startswith("[WARNING:2] DiskFull")

        # Inhibition: the warning HighErrorRate (same alertname and service as the critical one)
        # never reaches the team channel. Once the router holds every alert posted, Alertmanager
        # has sent each group's final state (and sends no more: nothing changes); once nothing
        # is queued or being sent, whatever those payloads caused has been delivered.
        async def alerts_known() -> dict[str, Any]:
            resp = await client.get("/api/v1/alerts", headers={"Authorization": "Bearer t"})
            by_instance = {a["labels"]["instance"]: a for a in (await resp.json())["alerts"]}
            return by_instance if len(by_instance) == 4 else {}

        by_instance = await until(alerts_known)
        await settled(client)
        assert not [p for p in fakes.slack.posts() if p.channel == "C0ALERTS"]
        assert by_instance["api-1"]["inhibited_by"] == by_instance["api-0"]["fingerprint"]

        # The silence link opens Alertmanager's "new silence" page with matchers that select
        # exactly this alert, as Alertmanager itself understands them.
        silence_url = _silence_link(tg[0].text)
        parsed = urlparse(silence_url)
        assert f"{parsed.scheme}://{parsed.netloc}" == am and parsed.fragment.startswith(
            "/silences/new?filter="
        )
        matchers = unquote(parse_qs(parsed.fragment.split("?", 1)[1])["filter"][0])
        params = [("filter", str(m)) for m in parse_matchers(matchers)]
        async with http.get(f"{am}/api/v2/alerts", params=params) as resp:
            selected = await resp.json()
        assert [a["labels"]["instance"] for a in selected] == ["api-0"]
        async with http.get(f"{am}/") as resp:
            assert resp.status == 200  # the UI the link opens

        # Resolve: PagerDuty resolves the same dedup_key; the Telegram message is edited.
        past = datetime.now(UTC) - timedelta(seconds=5)
        await post_alerts(
            alert("HighErrorRate", ends=past, service="api", severity="critical", instance="api-0")
        )
        resolve = await eventually(
            lambda: [e for e in fakes.pagerduty.events if e["event_action"] == "resolve"]
        )
        assert resolve[0]["dedup_key"] == trigger["dedup_key"]
        await eventually(lambda: tg[0].text.startswith("✅ <b>RESOLVED: HighErrorRate</b>"))
        assert len(fakes.telegram.messages) == 1  # edited, not a new message


def _silence_link(html: str) -> str:
    """The href of the message's Silence link."""
    links = [part.split('"', 1)[0] for part in html.split('<a href="')[1:]]
    silence = [link for link in links if "/#/silences/new" in link]
    assert silence, f"no silence link in {html[:200]}"
    return silence[0].replace("&amp;", "&")
