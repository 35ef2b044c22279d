"""Engineers acking the same incident at the same moment: exactly one ack wins, once.

Slack slash commands (signed) and Telegram updates race against each other through the real app;
the store's compare-and-set decides, and only the winner's ack reaches PagerDuty and the messages.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from router.app import RUNTIME
from router.state import IncidentState, Plan

from ..harness import Client, Fakes, firing_payload, post, settled
from .test_slack import RECEIVERS, SIGNING_SECRET, command, slash
from .test_telegram import ALICE, SECRET, deliver, reply_to
from .test_telegram import command as telegram_command

BOTH = f"""
chatops:
  alertmanager_url: ALERTMANAGER
  slack:
    signing_secret: {SIGNING_SECRET}
    team_id: T000
    allowed_channels: [C0ALERTS]
  telegram:
    bot_token: "123456:good-token"
    api_url: TELEGRAM
    webhook_secret: {SECRET}
    allowed_chats: [-1002]
"""
WON = re.compile(r"^✅ #(\w+) acknowledged by (\S+)\.")


async def test_the_store_decides_one_winner_of_two_concurrent_acks(
    fakes: Fakes, make_client: Any
) -> None:
    client = await make_client(fakes, RECEIVERS)
    incident = (await post(client, firing_payload(1, "cas")))["incidents"][0]
    store = client.app[RUNTIME].planner
    now = datetime.now(UTC)
    results = await asyncio.gather(
        *(store.set_ack(incident, None, name, now, f"c{n}") for n, name in enumerate(["@a", "@b"]))
    )
    assert [type(r) for r in results] == [Plan, IncidentState]
    lost = results[1]
    assert isinstance(lost, IncidentState) and lost.acked_by == "@a"
    # Taking back an ack someone else already changed loses too.
    assert isinstance(await store.set_ack(incident, "@b", None, now, "c3"), IncidentState)
    assert isinstance(await store.set_ack(incident, "@a", None, now, "c4"), Plan)


async def test_concurrent_acks_from_slack_and_telegram_have_one_winner(
    fakes: Fakes, make_client: Any
) -> None:
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, RECEIVERS, BOTH.replace("ALERTMANAGER", "http://unused"))
    incidents = [
        (await post(client, firing_payload(1, f"race{n}")))["incidents"][0] for n in range(4)
    ]
    await settled(client)

    async def slack_ack(incident: str, user: str) -> str:
        status, answer = await command(client, slash(incident, user=user))
        assert status == 200
        return str(answer["text"])

    for n, incident in enumerate(incidents):
        slack_answers = await asyncio.gather(
            slack_ack(incident, "bob"),
            slack_ack(incident, "dave"),
            deliver(client, telegram_command(f"/ack {incident}", ALICE)),
        )
        telegram_answer = (await reply_to(fakes, -1002, n + 1))[n]
        answers = [*slack_answers[:2], telegram_answer]
        winners = [m.group(2) for a in answers if (m := WON.match(a))]
        assert len(winners) == 1, answers
        for loser in (a for a in answers if not WON.match(a)):
            assert winners[0] in loser, (loser, answers)
    await settled(client)
    acks = [e["dedup_key"] for e in fakes.pagerduty.events if e["event_action"] == "acknowledge"]
    assert len(acks) == len(incidents) == len(set(acks))
    thread_notes = [r.payload["text"] for r in fakes.slack.replies()]
    assert len(thread_notes) == len(incidents)


@pytest.fixture
async def alertmanager(aiohttp_server: Any) -> tuple[TestServer, list[dict[str, Any]]]:
    """An Alertmanager silences API that takes a moment to answer, as a loaded one does."""
    silences: list[dict[str, Any]] = []

    async def create(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        silences.append(await request.json())
        return web.json_response({"silenceID": f"s{len(silences)}"})

    app = web.Application()
    app.router.add_post("/api/v2/silences", create)
    return await aiohttp_server(app), silences


async def test_only_the_winner_creates_a_silence(
    fakes: Fakes, make_client: Any, alertmanager: tuple[TestServer, list[dict[str, Any]]]
) -> None:
    server, silences = alertmanager
    client: Client = await make_client(
        fakes, RECEIVERS, BOTH.replace("ALERTMANAGER", str(server.make_url("")))
    )
    incident = (await post(client, firing_payload(1, "silence-race")))["incidents"][0]
    answers = await asyncio.gather(
        *(command(client, slash(f"{incident} 1h", user=u)) for u in ("bob", "dave", "erin"))
    )
    texts = [a[1]["text"] for a in answers]
    [won] = [t for t in texts if WON.match(t)]
    assert "silence s1" in won, texts
    assert len(silences) == 1, texts
    winner = WON.match(won).group(2)  # type: ignore[union-attr]
    assert silences[0]["createdBy"] == winner
    assert all(winner in t for t in texts if t != won), texts
