"""Replicas of `serve` on one PostgreSQL database (tests/replicas.py): the harness itself on
one replica; two and three replicas behind a round-robin client and behind a real Alertmanager
sending every payload to every replica. Every alert reaches every channel fake, once per state
(firing, resolved): nothing here kills a replica, so the in-flight window (README, "High
availability") is empty and once means exactly once."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ..harness import ALL_FOUR, Fakes
from ..replicas import TOKEN, Replicas, RoundRobin, replica_config
from .alertmanager import running_alertmanager

pytestmark = pytest.mark.slow

DELIVERED = timedelta(seconds=60)  # Telegram's fake paces one message per second per chat
CHANNELS = ("telegram", "slack", "email", "pagerduty")
GROUP = re.compile(r"HaGroup\d+")


def payload(group: int, resolved: bool = False) -> bytes:
    """Alertmanager's webhook for group `group`: alertname HaGroup<group>, two alerts."""
    now = datetime.now(UTC)
    alerts = [
        {
            "status": "resolved" if resolved else "firing",
            "labels": {"alertname": f"HaGroup{group}", "severity": "critical", "instance": f"i{k}"},
            "annotations": {"summary": f"group {group} alert {k}"},
            "startsAt": (now - timedelta(minutes=5)).isoformat(),
            "endsAt": now.isoformat() if resolved else "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": f"{group:08x}{k:08x}",
        }
        for k in range(2)
    ]
    return orjson.dumps(
        {
            "version": "4",
            "receiver": "router",
            "status": "resolved" if resolved else "firing",
            "alerts": alerts,
            "groupLabels": {"alertname": f"HaGroup{group}"},
            "commonLabels": {"alertname": f"HaGroup{group}", "severity": "critical"},
            "commonAnnotations": {},
            "externalURL": "http://am:9093",
            "groupKey": f'{{}}:{{alertname="HaGroup{group}"}}',
            "truncatedAlerts": 0,
        }
    )


def sends(fakes: Fakes) -> Counter[tuple[str, str, str]]:
    """What each channel fake accepted: (channel, alertname, "firing" or "resolved") -> how
    many times. A new Telegram or Slack message is the firing state, its edit to RESOLVED the
    resolved one; an email's or a PagerDuty event's state is its own."""
    seen: Counter[tuple[str, str, str]] = Counter()

    def note(channel: str, sent: object, state: str) -> None:
        for name in set(GROUP.findall(str(sent))):
            seen[channel, name, state] += 1

    for message in fakes.telegram.messages.values():
        note("telegram", message.text, "firing")
        if "RESOLVED" in message.text:
            for _ in range(message.edits):
                note("telegram", message.text, "resolved")
    for post in fakes.slack.posts():
        note("slack", post.payload, "firing")
        for update in post.updates:
            if "RESOLVED" in str(update):
                note("slack", update, "resolved")
    for mail in fakes.mailbox.messages:
        subject = str(mail["Subject"])
        note("email", subject, "resolved" if "RESOLVED" in subject else "firing")
    triggers = {e["dedup_key"]: e for e in fakes.pagerduty.events if e["event_action"] == "trigger"}
    for event in fakes.pagerduty.events:  # a resolve event carries only the trigger's dedup_key
        state = "resolved" if event["event_action"] == "resolve" else "firing"
        note("pagerduty", triggers.get(event["dedup_key"], event), state)
    return seen


def every_state(groups: range, resolved: bool) -> set[tuple[str, str, str]]:
    """Each (channel, alertname, state) the fakes should have seen once."""
    states = ("firing", "resolved") if resolved else ("firing",)
    return {(c, f"HaGroup{g}", s) for c in CHANNELS for g in groups for s in states}


async def settled(client: RoundRobin) -> list[dict[str, Any]]:
    """Every notification in the database, once none is queued or being sent (bounded)."""

    async def done() -> list[dict[str, Any]]:
        incidents = (await client.get_json("/api/v1/incidents"))["incidents"]
        notes = [n for i in incidents for n in i["notifications"]]
        return notes if notes and all(n["state"] in ("sent", "dead") for n in notes) else []

    notes: list[dict[str, Any]] = await client.replicas.wait_for(
        done, "every notification sent", DELIVERED
    )
    return notes


async def test_one_replica_through_the_harness(
    fakes: Fakes, tmp_path: Path, postgres_url: str
) -> None:
    """The harness on one replica (what the database allows before replicas share it): a
    payload posted twice is delivered once to every channel; SIGKILL, restart on a new port,
    the resolve is delivered; leaving the harness stops every process it started."""
    config = replica_config(postgres_url, ALL_FOUR, fakes=fakes)
    async with Replicas(tmp_path, config, 1) as replicas, aiohttp.ClientSession() as session:
        client = RoundRobin(replicas, session)
        first = await client.post(payload(0))
        again = await client.post(payload(0))
        assert first.replica == again.replica == "r0"
        assert first.correlation_id != again.correlation_id
        want = every_state(range(1), resolved=False)
        await replicas.wait_for(lambda: set(sends(fakes)) == want, "firing sent", DELIVERED)
        await settled(client)

        assert await replicas.kill(0) == -9
        with pytest.raises(AssertionError, match="no replica accepted"):
            await client.post(payload(0, resolved=True))
        await replicas.restart(0)
        assert replicas[0].starts == 2 and replicas[0].running
        await client.post(payload(0, resolved=True))
        want = every_state(range(1), resolved=True)
        await replicas.wait_for(lambda: set(sends(fakes)) == want, "resolve sent", DELIVERED)
        await settled(client)
        procs = [r.proc for r in replicas.replicas]
        assert replicas[0].events("startup_failed") == []
    assert all(p is not None and p.poll() is not None for p in procs)
    assert sends(fakes) == Counter(dict.fromkeys(want, 1))


@pytest.mark.parametrize("count", [2, 3])
async def test_replicas_behind_round_robin_send_each_state_once(
    fakes: Fakes, tmp_path: Path, postgres_url: str, count: int
) -> None:
    """Each payload arrives at every replica (as from Alertmanager's HA peers), all at once:
    every alert reaches every channel once firing, then once resolved."""
    groups = range(4)
    config = replica_config(postgres_url, ALL_FOUR, fakes=fakes)
    async with Replicas(tmp_path, config, count) as replicas, aiohttp.ClientSession() as session:
        client = RoundRobin(replicas, session)
        for resolved in (False, True):
            answers = await asyncio.gather(
                *(client.post(payload(g, resolved)) for g in groups for _ in range(count))
            )
            assert {a.replica for a in answers} == {r.name for r in replicas.replicas}
            want = every_state(groups, resolved)
            await replicas.wait_for(
                lambda want=want: set(sends(fakes)) == want, "every state sent", DELIVERED
            )
            await settled(client)
        assert all(r.running for r in replicas.replicas)
    assert sends(fakes) == Counter(dict.fromkeys(every_state(groups, True), 1))


AM_CONFIG = """
route:
  receiver: routers
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: routers
    webhook_configs:
{webhooks}
"""
WEBHOOK = """      - url: {url}/webhook
        send_resolved: true
        http_config:
          authorization: {{type: Bearer, credentials: {token}}}
"""


def am_alert(group: int, instance: int, resolved: bool) -> dict[str, Any]:
    """An alert as Prometheus posts it to Alertmanager's API (ended 5 s ago if `resolved`)."""
    now = datetime.now(UTC)
    return {
        "labels": {
            "alertname": f"HaGroup{group}",
            "severity": "critical",
            "instance": f"i{instance}",
        },
        "annotations": {"summary": f"group {group} alert {instance}"},
        "startsAt": (now - timedelta(minutes=5)).isoformat(),
        "endsAt": (
            now - timedelta(seconds=5) if resolved else now + timedelta(hours=1)
        ).isoformat(),
    }


@pytest.mark.parametrize("count", [2, 3])
async def test_alertmanager_sends_to_every_replica_and_each_state_goes_out_once(
    fakes: Fakes, tmp_path: Path, postgres_url: str, count: int
) -> None:
    """Debian's Alertmanager with one webhook_configs entry per replica (each payload reaches
    every replica): every alert reaches every channel once firing, then once resolved."""
    groups = range(3)
    config = replica_config(postgres_url, ALL_FOUR, fakes=fakes)
    routers = tmp_path / "routers"
    routers.mkdir()
    async with Replicas(routers, config, count) as replicas, aiohttp.ClientSession() as session:
        webhooks = "".join(WEBHOOK.format(url=r.url, token=TOKEN) for r in replicas.replicas)
        am_config = AM_CONFIG.format(webhooks=webhooks)
        async with running_alertmanager(tmp_path, am_config) as am:
            for resolved in (False, True):
                alerts = [am_alert(g, k, resolved) for g in groups for k in range(2)]
                async with session.post(f"{am}/api/v2/alerts", json=alerts) as resp:
                    assert resp.status == 200, await resp.text()
                want = every_state(groups, resolved)
                await replicas.wait_for(
                    lambda want=want: set(sends(fakes)) == want, "every state sent", DELIVERED
                )
                await settled(RoundRobin(replicas, session))
            accepted = [len(r.events("webhook_accepted")) for r in replicas.replicas]
            assert all(accepted), f"every replica got Alertmanager's payloads: {accepted}"
    assert sends(fakes) == Counter(dict.fromkeys(every_state(groups, True), 1))
