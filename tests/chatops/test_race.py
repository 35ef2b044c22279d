"""Engineers acking the same incident at the same moment: exactly one ack wins, once.

Slack slash commands (signed) and Telegram updates race against each other through the real app;
the store's compare-and-set decides, and only the winner's ack reaches PagerDuty and the messages.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from router.alertmanager import Alertmanager
from router.app import COMMANDS, PLANNER, RELOADER, ROLE, STORE, utc_now
from router.chatops.commands import Actor, Allow, Command, Commands, Policy
from router.metrics import Metrics
from router.outcomes import Outcomes
from router.pipeline import Pipeline
from router.planner import Planner
from router.state import IncidentState, Plan
from router.store.postgres import PostgresStore

from ..harness import Client, Fakes, firing_payload, post, postgres_client, settled
from .test_slack import RECEIVERS, SIGNING_SECRET, command, slash
from .test_telegram import ALICE, SECRET, deliver, incident_state, reply_to
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
    store = client.app[PLANNER]
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


# ---------------------------------------------------------------- several replicas (PostgreSQL)


def replica_that_does_not_plan(client: Client, alertmanager_url: str) -> Commands:
    """What another replica's chat-ops are: the same rules on the same database, with a
    planner that holds no state (it does not plan; its acks go through the store's `commands`
    table to the planner)."""
    store, config = client.app[STORE], client.app[RELOADER].config
    assert isinstance(store, PostgresStore)
    standby = Planner(
        store,
        lambda new_id: Pipeline(config, new_id),
        wake_outbox=asyncio.Event(),
        outcomes=Outcomes(),
        metrics=Metrics(),
    )
    return Commands(
        standby,
        utc_now,
        Alertmanager(timedelta(seconds=2)),
        alertmanager_url,
        queue=store,
        planning=lambda: False,
    )


SLACK_POLICY = Policy("slack", "T000", Allow(frozenset({"C0ALERTS"})))


def slack_actor(name: str) -> Actor:
    return Actor("slack", f"U{name.upper()}", f"@{name}", "C0ALERTS", "T000")


async def test_acks_from_a_replica_that_does_not_plan_and_from_telegram_have_one_winner(
    fakes: Fakes,
    aiohttp_client: Any,
    tmp_path: Any,
    postgres_url: str,
    alertmanager: tuple[TestServer, list[dict[str, Any]]],
) -> None:
    """A Slack /ack taken by a replica that does not plan (committed as a command, applied by
    the planner) races a Telegram /ack on the planner's replica: one ack, one silence, one
    PagerDuty acknowledge, and the loser is told who won."""
    server, silences = alertmanager
    fakes.telegram.flood_interval_s = 0
    am_url = str(server.make_url(""))
    extra = BOTH.replace("ALERTMANAGER", am_url)
    client = await postgres_client(aiohttp_client, fakes, tmp_path, postgres_url, RECEIVERS, extra)
    other = replica_that_does_not_plan(client, am_url)
    incidents = [
        (await post(client, firing_payload(1, f"pg-race{n}")))["incidents"][0] for n in range(3)
    ]
    await settled(client)
    for n, incident in enumerate(incidents):
        slack_answer, status = await asyncio.gather(
            other.run(
                Command("ack", incident, timedelta(hours=1)), slack_actor("bob"), SLACK_POLICY
            ),
            deliver(client, telegram_command(f"/ack {incident} 1h", ALICE)),
        )
        assert status == 200
        telegram_answer = (await reply_to(fakes, -1002, n + 1))[n]
        answers = [slack_answer, telegram_answer]
        winners = [m.group(2) for a in answers if (m := WON.match(a))]
        assert len(winners) == 1, answers
        [loser] = [a for a in answers if not WON.match(a)]
        assert f"acknowledged by {winners[0]}" in loser, answers  # already, or just now
        assert (await incident_state(client, incident))["acked_by"] == winners[0]
    await settled(client)
    assert len(silences) == len(incidents)
    acks = [e["dedup_key"] for e in fakes.pagerduty.events if e["event_action"] == "acknowledge"]
    assert len(acks) == len(incidents) == len(set(acks))
    store = client.app[STORE]
    assert isinstance(store, PostgresStore)
    assert await store.pending_commands(10) == []


async def test_a_command_the_planner_has_not_applied_yet_is_answered_as_recorded(
    fakes: Fakes, aiohttp_client: Any, tmp_path: Any, postgres_url: str
) -> None:
    """With no planner applying, the replica answers at once that the ack is recorded; the
    planner applies it later, once, and writes the answer the replica would have given; a
    silence an earlier planner made for it (and died before its commit) is not made again."""
    extra = BOTH.replace("ALERTMANAGER", "http://unused")
    client = await postgres_client(aiohttp_client, fakes, tmp_path, postgres_url, RECEIVERS, extra)
    planner_commands = client.app[COMMANDS]
    planner_commands.planning = lambda: False  # the planner's replica stops applying commands
    other = replica_that_does_not_plan(client, "http://unused")
    incident = (await post(client, firing_payload(1, "pg-later")))["incidents"][0]

    listed = await other.run(Command("alerts"), slack_actor("bob"), SLACK_POLICY)
    assert f"#{incident} HighLatency" in listed and "NOT acked" in listed, listed  # the store
    answer = await other.run(
        Command("ack", incident, timedelta(hours=1)), slack_actor("bob"), SLACK_POLICY
    )
    assert answer.startswith(f"⏳ /ack #{incident} by @bob is recorded"), answer
    assert (await incident_state(client, incident))["acked_by"] is None
    store = client.app[STORE]
    assert isinstance(store, PostgresStore)
    [queued] = await store.pending_commands(10)
    assert (queued.name, queued.incident_id, queued.actor["name"]) == ("ack", incident, "@bob")
    await store.note_silence(queued.id, "s-made-before")  # Alertmanager (unused) is not asked

    assert await planner_commands.apply_queued() == 1
    result = await store.command_result(queued.id)
    assert result is not None and WON.match(result), result
    assert "Silenced in Alertmanager for 1h (silence s-made-before)" in result, result
    acked = await incident_state(client, incident)
    assert (acked["acked_by"], acked["silence_id"]) == ("@bob", "s-made-before")
    listed = await other.run(Command("alerts"), slack_actor("bob"), SLACK_POLICY)
    assert f"#{incident} HighLatency" in listed and "acked by @bob" in listed, listed
    # Applied once: the answer is written, and a second answer is refused.
    assert await planner_commands.apply_queued() == 0
    assert not await store.finish_command(queued.id, "again", utc_now())
    assert await store.command_result(queued.id) == result


async def test_two_replicas_ack_the_same_incident_at_the_same_moment_from_slack_and_telegram(
    fakes: Fakes,
    aiohttp_client: Any,
    tmp_path: Any,
    postgres_url: str,
    alertmanager: tuple[TestServer, list[dict[str, Any]]],
) -> None:
    """Issue 17's proof: two replicas on one database (one plans, the other stands by) take an
    /ack of the same incident at the same moment, one from Slack and one from Telegram, each
    way round: one ack (one set of message updates), one silence, the loser told who won."""
    server, silences = alertmanager
    fakes.telegram.flood_interval_s = 0
    extra = BOTH.replace("ALERTMANAGER", str(server.make_url("")))
    planner = await postgres_client(aiohttp_client, fakes, tmp_path, postgres_url, RECEIVERS, extra)
    standby = await postgres_client(aiohttp_client, fakes, tmp_path, postgres_url, RECEIVERS, extra)
    assert planner.app[ROLE].is_planner and not standby.app[ROLE].is_planner
    incidents = [
        (await post(planner, firing_payload(1, f"two-replicas{n}")))["incidents"][0]
        for n in range(4)
    ]
    won: dict[str, str] = {}
    for n, incident in enumerate(incidents):
        slack_to, telegram_to = (standby, planner) if n % 2 == 0 else (planner, standby)
        (status, slack_answer), telegram_status = await asyncio.gather(
            command(slack_to, slash(f"{incident} 1h", user="bob")),
            deliver(telegram_to, telegram_command(f"/ack {incident} 1h", ALICE)),
        )
        assert status == telegram_status == 200
        answers = [str(slack_answer["text"]), (await reply_to(fakes, -1002, n + 1))[n]]
        winners = [m.group(2) for a in answers if (m := WON.match(a))]
        assert len(winners) == 1, answers
        [loser] = [a for a in answers if not WON.match(a)]
        assert f"acknowledged by {winners[0]}" in loser, answers
        won[incident] = winners[0]
        stored = await incident_state(standby, incident)
        assert stored["acked_by"] == winners[0]
        acked = [x for x in stored["notifications"] if x["reason"] == "acked"]
        assert len(acked) == 2, stored["notifications"]  # Slack and PagerDuty, once each
    # One silence per incident, made for its winner.
    made = {re.search(r"#(\w+)", s["comment"]).group(1): s["createdBy"] for s in silences}  # type: ignore[union-attr]
    assert len(silences) == len(made) and made == won, (silences, won)
