"""Replicas of `serve` on one PostgreSQL database (tests/replicas.py): the harness itself on
one replica (a second one on the same database is refused in this version). Every alert
reaches every channel fake, once per state (firing, resolved)."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ..harness import ALL_FOUR, Fakes
from ..replicas import Replicas, RoundRobin, replica_config

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
