"""The store's contract, the same on every engine (SQLite, PostgreSQL): what is committed, in
which order, what delivery's claims and retries do, paging, retention, one router per SQLite file and one planner per PostgreSQL database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from router.config import parse_config
from router.errors import LeaseLost, StoreError
from router.models import WebhookPayload
from router.state import Destination

from ..harness import firing_payload
from ..helpers import TEST_LEASE, fixture_body, open_core
from .conftest import Engine

CONFIG = parse_config(
    "receivers: [{name: r, slack_configs: [{bot_token: x, channel: c}]}]\nroute: {receiver: r}\n"
)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def test_prune_forgets_only_old_finished_things(engine: Engine) -> None:
    core = await open_core(engine.store(), CONFIG)
    try:
        await core.ingest(fixture_body("firing-group-3-alerts"), T0, "c1")
        await core.ingest(fixture_body("mixed-firing-resolved"), T0 + timedelta(minutes=1), "c2")
        await core.ingest(fixture_body("resolved-group"), T0 + timedelta(minutes=2), "c3")
        await core.ingest(
            fixture_body("send-resolved-false-firing"), T0 + timedelta(minutes=3), "c4"
        )  # stays open
        rows = await core.store.claim_due(T0 + timedelta(minutes=4), ["slack"], 100)
        sent = [(r, f"C1:{r.id}", T0 + timedelta(minutes=4)) for r in rows]
        await core.store.mark_sent_many(sent)

        assert await core.store.prune(timedelta(days=7), T0 + timedelta(days=6)) == 0
        removed = await core.store.prune(timedelta(days=7), T0 + timedelta(days=8))
        assert removed == 3 + 1 + 3  # 3 deliveries, 1 incident, 3 resolved alerts
        incidents = await core.store.list_incidents(100)
        alerts = await core.store.list_alerts(100)
        assert [i["status"] for i in incidents] == ["firing"]
        assert [a["status"] for a in alerts] == ["firing", "firing"]
        assert len(incidents[0]["notifications"]) == 1  # the open incident's
        refs = [await core.store.incident_for_message("slack", ref) for _, ref, _ in sent]
        assert sorted(r for r in refs if r is not None) == [incidents[0]["id"]]
        # The ids kept to hand out unused ones forget the pruned incident: memory stays bounded
        # by retention, not by every incident this process ever opened.
        assert core.store._ids == {incidents[0]["id"]}  # type: ignore[attr-defined]
    finally:
        await core.aclose()


async def test_a_newer_schema_is_refused(engine: Engine) -> None:
    await engine.set_schema_version(99)
    with pytest.raises(StoreError, match="schema version 99 is newer than this alert-router knows"):
        await open_core(engine.store(), CONFIG)


async def test_a_second_store_on_the_same_place(engine: Engine) -> None:
    """SQLite: a second router on the file is refused (one writer). PostgreSQL: a second
    replica opens the database, accepts payloads, and cannot commit a plan while the first
    holds the planner lease; the first plans what the second accepted."""
    first = await open_core(engine.store(), CONFIG)
    second = engine.store()
    if engine.name == "sqlite":
        with pytest.raises(StoreError, match="another alert-router"):
            await second.open()
    else:
        await second.open()
        assert await second.take_lease(timedelta(seconds=3)) == 0
        await second.accept(firing_payload(1, "via-second"), T0, "via-second")
        with pytest.raises(LeaseLost, match="no longer holds the planner lease"):
            await second.commit_plans([], None)
        planned = dict(await first.planner.plan_waiting())
        assert list(planned) == ["via-second"] and planned["via-second"].outbox
    await second.aclose()
    await first.aclose()
    third = await open_core(engine.store(), CONFIG)  # free once the first is closed
    await third.aclose()


async def test_payloads_accepted_together_get_ids_in_order_and_wait_until_planned(
    engine: Engine,
) -> None:
    store = engine.store()
    await store.open()
    await store.take_lease(TEST_LEASE)
    try:
        bodies = [fixture_body("firing-group-3-alerts")] * 20
        ids = await asyncio.gather(
            *(store.accept(b, T0, f"c{n}") for n, b in enumerate(bodies))
        )  # handed over together: group commits
        assert ids == sorted(ids) and len(set(ids)) == 20
        assert store.last_inbox_id == ids[-1]
        rows = await store.inbox_after(0, 100)
        assert [r.id for r in rows] == ids
        assert [r.correlation_id for r in rows] == [f"c{n}" for n in range(20)]
        assert rows[0].received_at == T0 and rows[0].body == bodies[0]
        assert await store.pending_alerts("c3") == 3
        assert await store.pending_alerts("nope") is None

        await store.commit_plans([], ids[9])  # the watermark passes the first ten
        await store.set_aside(rows[10], "cannot be planned")
        assert [r.id for r in await store.inbox_after(0, 100)] == ids[11:]
        assert await store.pending_alerts("c3") is None
        _, watermark = await store.load_state()
        assert watermark == ids[10]
    finally:
        await store.aclose()
    again = engine.store()
    await again.open()
    try:
        assert again.last_inbox_id == ids[-1]
        assert [r.id for r in await again.inbox_after(ids[10], 100)] == ids[11:]
    finally:
        await again.aclose()


async def test_plans_are_read_back_as_state_after_a_restart(engine: Engine) -> None:
    core = await open_core(engine.store(), CONFIG)
    try:
        await core.ingest(fixture_body("firing-group-3-alerts"), T0, "c1")
        before = core.planner.state
    finally:
        await core.aclose()
    again = await open_core(engine.store(), CONFIG)
    try:
        after = again.planner.state
        assert after.alerts == before.alerts
        assert after.incidents == before.incidents
        (incident,) = after.incidents.values()
        assert await again.store.incident(incident.id) == incident
        assert await again.store.incident("zzzzz") is None
        assert again.store.new_incident_id() != incident.id
    finally:
        await again.aclose()


async def test_delivery_claims_retries_and_gives_up_in_order(engine: Engine) -> None:
    core = await open_core(engine.store(), CONFIG)
    store = core.store
    try:
        for n in range(3):
            await core.ingest(firing_payload(1, f"g{n}"), T0 + timedelta(seconds=n), f"c{n}")
        first, second, third = await store.claim_due(T0 + timedelta(minutes=1), ["slack"], 100)
        assert [r.correlation_id for r in (first, second, third)] == ["c0", "c1", "c2"]
        assert await store.claim_due(T0 + timedelta(minutes=1), ["slack"], 100) == []
        assert await store.claim_due(T0 + timedelta(minutes=1), ["telegram"], 100) == []
        assert (await store.outbox_stats(T0 + timedelta(minutes=1)))[0] == 3

        await store.mark_sent_many([(first, "C1:1", T0 + timedelta(minutes=1))])
        assert await store.message_ref(first) == "C1:1"
        assert await store.incident_for_message("slack", "C1:1") == first.incident_id
        # A retry later holds the destination's later rows too (their order is kept).
        later = T0 + timedelta(minutes=5)
        await store.defer(second, "429", later)
        await store.mark_dead(third, "gone")
        assert await store.claim_due(later - timedelta(seconds=1), ["slack"], 100) == []
        (retry,) = await store.claim_due(later, ["slack"], 100)
        assert retry.id == second.id and retry.attempts == 1
        assert await store.outbox_stats(later) == (1, 5 * 60 - 1, 1)
    finally:
        await core.aclose()
    again = await open_core(engine.store(), CONFIG)  # a claim whose worker died is due again
    try:
        (due,) = await again.store.claim_due(T0 + timedelta(minutes=6), ["slack"], 100)
        assert due.id == second.id and due.view == second.view
    finally:
        await again.aclose()


TWO_KINDS = parse_config(
    "receivers: [{name: r, slack_configs: [{bot_token: x, channel: c}],"
    " telegram_configs: [{bot_token: '1:t', chat_id: 1}, {bot_token: '1:t', chat_id: 2}]}]\n"
    "route: {receiver: r}\n"
)


async def test_queued_rows_of_a_removed_channel_kind_are_dead_letters(engine: Engine) -> None:
    core = await open_core(engine.store(), TWO_KINDS)
    store = core.store
    try:
        for n in range(3):
            await core.ingest(firing_payload(1, f"g{n}"), T0 + timedelta(seconds=n), f"c{n}")
        # One Telegram row is being sent (claimed): its worker finishes it, whatever the config.
        (sending,) = await store.claim_due(T0 + timedelta(minutes=1), ["telegram"], 1)
        now = T0 + timedelta(minutes=1)
        assert await store.outbox_stats(now) == (9, 60, 0)

        dead = await store.mark_dead_unless(["slack"], "telegram removed")
        assert dead == {Destination("r", "telegram", 0): 2, Destination("r", "telegram", 1): 3}
        assert await store.outbox_stats(now) == (4, 60, 5)  # 3 for Slack, the one being sent
        claimed = await store.claim_due(now, ["slack", "telegram"], 100)
        assert [r.destination.channel for r in claimed] == ["slack"] * 3
        assert await store.mark_dead_unless(["slack", "telegram"], "nothing removed") == {}
        notes = [n for i in await store.list_incidents(100) for n in i["notifications"]]
        assert sorted((n["channel"], n["state"], n["last_error"]) for n in notes) == [
            ("slack", "sending", None),
            ("slack", "sending", None),
            ("slack", "sending", None),
            ("telegram", "dead", "telegram removed"),
            ("telegram", "dead", "telegram removed"),
            ("telegram", "dead", "telegram removed"),
            ("telegram", "dead", "telegram removed"),
            ("telegram", "dead", "telegram removed"),
            ("telegram", "sending", None),
        ]
        assert sending.destination == Destination("r", "telegram", 0)
    finally:
        await core.aclose()


async def test_moved_chats_are_remembered_and_replaced(engine: Engine) -> None:
    store = engine.store()
    await store.open()
    try:
        assert await store.moved_chats() == {}
        await store.save_moved_chat("telegram", "-1", "-100", T0)
        await store.save_moved_chat("telegram", "-1", "-200", T0)
        await store.save_moved_chat("slack", "C1", "C2", T0)
        assert await store.moved_chats() == {"telegram": {"-1": "-200"}, "slack": {"C1": "C2"}}
    finally:
        await store.aclose()


async def test_lists_page_and_filter(engine: Engine) -> None:
    core = await open_core(engine.store(), CONFIG)
    try:
        for n in range(5):
            await core.ingest(firing_payload(3, f"g{n}"), T0 + timedelta(minutes=n), f"c{n}")
        alerts = await core.store.list_alerts(100)
        assert len(alerts) == 15
        fingerprints = [a["fingerprint"] for a in alerts]
        assert fingerprints == sorted(fingerprints)
        page = await core.store.list_alerts(4, after=fingerprints[3])
        assert [a["fingerprint"] for a in page] == fingerprints[4:8]
        assert len(await core.store.list_alerts(100, status="firing", receiver="r")) == 15
        assert await core.store.list_alerts(100, receiver="other") == []
        assert await core.store.list_alerts(100, status="resolved") == []

        incidents = await core.store.list_incidents(100)
        assert len(incidents) == 5
        assert [i["opened_at"] for i in incidents] == sorted(
            (i["opened_at"] for i in incidents), reverse=True
        )
        last = incidents[1]
        page2 = await core.store.list_incidents(2, before=(last["opened_at"], last["id"]))
        assert [i["id"] for i in page2] == [i["id"] for i in incidents[2:4]]
        assert len(await core.store.list_incidents(100, status="firing", receiver="r")) == 5
        assert await core.store.list_incidents(100, receiver="other") == []
        assert [n["state"] for n in incidents[0]["notifications"]] == ["queued"]
    finally:
        await core.aclose()


async def test_a_store_that_can_be_written_is_ready(engine: Engine) -> None:
    store = engine.store()
    await store.open()
    try:
        await store.check_writable()
        assert store.problem() is None and store.files_lost() == []
    finally:
        await store.aclose()


LONG_KEY = '{}:{group="' + "".join(f"{n:x}" for n in range(4000)) + '"}'


@pytest.mark.parametrize(
    ("change", "kept_on_postgres"),
    [
        pytest.param({"groupKey": '{}:{group="nul\u0000"}'}, False, id="nul-in-group-key"),
        pytest.param({"externalURL": "http://am\u0000"}, False, id="nul-in-external-url"),
        pytest.param({"groupKey": LONG_KEY}, True, id="long-group-key"),
    ],
)
async def test_a_payload_the_store_refuses_is_set_aside_and_the_next_is_planned(
    engine: Engine, change: dict[str, str], kept_on_postgres: bool
) -> None:
    """SQLite keeps any text; PostgreSQL refuses a NUL in text: that payload is set aside (it
    used to stop the planner, retrying it forever), and the payloads after it are planned."""
    data = orjson.loads(firing_payload(1, "poison"))
    data.update(change)
    core = await open_core(engine.store(), CONFIG)
    try:
        body = orjson.dumps(data)
        await core.planner.accept(body, T0, "bad", WebhookPayload.model_validate_json(body))
        good = firing_payload(1, "next")
        await core.planner.accept(good, T0, "good", WebhookPayload.model_validate_json(good))
        planned = dict(await core.planner.plan_waiting())
        assert planned["good"].outbox
        kept = engine.name == "sqlite" or kept_on_postgres
        assert ("bad" in planned) == kept
        assert len(await core.store.list_incidents(100)) == (2 if kept else 1)
        assert await core.store.inbox_after(0, 100) == []
    finally:
        await core.aclose()


async def test_claims_and_dead_letters_by_destination_and_age(engine: Engine) -> None:
    """What a replica of a shared outbox asks: claim only its config's destinations; give up
    only on rows of the others queued before a time."""
    core = await open_core(engine.store(), TWO_KINDS)
    store = core.store
    slack, chat1, chat2 = (
        Destination("r", "slack", 0),
        Destination("r", "telegram", 0),
        Destination("r", "telegram", 1),
    )
    try:
        for n in range(2):
            await core.ingest(firing_payload(1, f"g{n}"), T0 + timedelta(minutes=n), f"c{n}")
        now = T0 + timedelta(minutes=5)
        claimed = await store.claim_due(now, ["slack", "telegram"], 100, [chat2])
        assert [r.destination for r in claimed] == [chat2, chat2]
        assert await store.claim_due(now, ["slack", "telegram"], 100, []) == []
        dead = await store.mark_dead_unless(
            ["slack", "telegram"],
            "not ours",
            destinations=[slack],
            created_before=T0 + timedelta(seconds=30),
        )
        assert dead == {chat1: 1}  # the first row of chat1; chat2's are being sent
        assert await store.mark_dead_unless(["slack"], "x", destinations=[slack]) == {chat1: 1}
        assert await store.outbox_stats(now) == (4, 300, 2)
    finally:
        await core.aclose()


def test_incident_ids_are_short_unused_and_of_the_alphabet() -> None:
    from collections import Counter

    from router.store import ID_ALPHABET, ID_LENGTH, unused_id

    taken = {"22222"}
    ids = [unused_id(taken) for _ in range(3_000)]
    assert len(set(ids)) == len(ids) and "22222" not in ids
    assert taken == {"22222", *ids}  # each handed out is taken from then on
    assert all(len(i) == ID_LENGTH and set(i) <= set(ID_ALPHABET) for i in ids)
    seen = Counter(c for i in ids for c in i)  # 15,000 characters: ~484 of each of 31
    assert set(seen) == set(ID_ALPHABET)
    assert all(300 < n < 700 for n in seen.values()), seen
