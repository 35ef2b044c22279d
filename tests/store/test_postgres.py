"""The PostgreSQL store's own cases: one migration under a lock when replicas start together,
the planner lease and its fence, errors name the database and never its password, connections
the server ends while the router writes, delivery claims of a replica killed while delivering
taken over after their lease, the inbox's order across replicas."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from router.config import parse_config
from router.errors import LeaseLost, StoreError
from router.state import Destination
from router.store.postgres import POOL_SIZE, PostgresStore
from router.store.postgres_schema import SCHEMA_VERSION, migrate

from ..harness import firing_payload
from ..helpers import open_core
from ..postgres import PostgresServer, end_connections

T0 = datetime(2026, 11, 1, tzinfo=UTC)
ROUNDS = 20
LEASE = timedelta(seconds=30)
CONFIG = parse_config(
    "receivers: [{name: r, slack_configs: [{bot_token: x, channel: c}]}]\nroute: {receiver: r}\n"
)


async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    conns = [await asyncpg.connect(postgres_url) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(c, "db") for c in conns))
        assert await conns[0].fetchval("SELECT array_agg(version) FROM schema_version") == [
            SCHEMA_VERSION
        ]
    finally:
        for c in conns:
            await c.close()


async def test_one_replica_holds_the_planner_lease_and_a_lost_one_fences_its_plans(
    postgres_url: str,
) -> None:
    """The lease is taken when free, renewed by its holder only, taken over with the next
    epoch once expired; the replica that lost it commits no plan (LeaseLost), and every plan
    committed carries its epoch (with the watermark and on each notification)."""
    core = await open_core(PostgresStore(postgres_url), CONFIG)  # takes the lease: epoch 1
    first, second = core.store, PostgresStore(postgres_url)
    await second.open()
    admin = await asyncpg.connect(postgres_url)
    try:
        assert first.replica != second.replica
        assert await second.take_lease(LEASE) == 0
        assert await first.take_lease(LEASE) == 1  # renewed, same epoch
        await core.ingest(firing_payload(1, "g1"), T0, "c1")
        # The first is cut off long enough for its lease to run out (as its clock would).
        await admin.execute("UPDATE planner_lease SET lease_until=clock_timestamp()")
        assert await second.take_lease(LEASE) == 2
        assert await first.take_lease(LEASE) == 0
        with pytest.raises(LeaseLost, match=f"this replica \\({first.replica}\\) no longer"):
            await core.ingest(firing_payload(1, "g2"), T0, "c2")
        with pytest.raises(LeaseLost):
            await first.prune(timedelta(days=7), T0)
        await second.commit_plans([], await second.watermark() + 1)  # plans c2's row
        rows = await admin.fetch("SELECT correlation_id, epoch FROM outbox ORDER BY id")
        assert [tuple(r) for r in rows] == [("c1", 1)]
        assert tuple(await admin.fetchrow("SELECT watermark, epoch FROM planner")) == (2, 2)
    finally:
        await admin.close()
        await second.aclose()
        await core.aclose()


async def test_a_lease_connection_the_server_ends_is_made_again_and_keeps_the_epoch(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        assert await store.take_lease(LEASE) == 1
        await end_connections(postgres_url)
        answers = []
        for _ in range(3):  # the first try may find the connection ended (a StoreError)
            try:
                answers.append(await store.take_lease(LEASE))
            except StoreError:
                answers.append(None)
        assert answers[-1] == 1 and None not in answers[1:]
        await store.accept(firing_payload(1, "after"), T0, "after")  # the pool reconnects
    finally:
        await store.aclose()


async def test_errors_name_the_database_without_its_password(
    postgres_server: PostgresServer,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{postgres_server.port}/no_such_database"
    store = PostgresStore(url, password="pg-s3cret-pw")
    with pytest.raises(StoreError) as refused:
        await store.open()
    assert str(refused.value).startswith(f"{url}: ")
    assert "no_such_database" in str(refused.value) and "pg-s3cret-pw" not in str(refused.value)
    assert "pg-s3cret-pw" not in repr(store)
    await store.aclose()


async def test_every_call_ends_in_a_result_or_a_store_error_when_connections_drop(
    postgres_url: str,
) -> None:
    """A webhook waiting for its commit is answered (200 or 503), and a worker gets a
    StoreError it handles, never an asyncpg error it does not know (it used to be
    InternalClientError: the delivery worker died, a webhook waited forever)."""
    admin = await asyncpg.connect(postgres_url)
    try:
        for n in range(ROUNDS):
            store = PostgresStore(postgres_url)
            await store.open()
            calls = [store.accept(firing_payload(1, f"g{n}-{i}"), T0, f"c{i}") for i in range(20)]
            calls += [store.claim_due(T0, ["slack"], 100) for _ in range(4)]
            calls += [asyncio.wait_for(store.check_writable(), 0.001) for _ in range(4)]
            running = asyncio.gather(*calls, return_exceptions=True)
            await asyncio.sleep(0.001 * (n % 5))
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname=current_database() AND pid<>pg_backend_pid()"
            )
            ended = await asyncio.wait_for(running, 60)
            odd = [e for e in ended if isinstance(e, BaseException)]
            odd = [e for e in odd if not isinstance(e, StoreError | TimeoutError)]
            assert odd == []
            await asyncio.wait_for(store.aclose(), 60)
    finally:
        await admin.close()


# ---------------------------------------------------------------- delivery on every replica

DESTINATIONS = 4
SPREAD = parse_config(
    "receivers: [{name: r, slack_configs: ["
    + ", ".join(f"{{bot_token: x, channel: c{n}}}" for n in range(DESTINATIONS))
    + "]}]\nroute: {receiver: r}\n"
)
# A replica that claims rows and dies with them (SIGKILL): argv is the URL and the lease in
# seconds; it prints the ids it claimed, then waits to be killed.
DYING_REPLICA = """
import asyncio, sys
from datetime import UTC, datetime, timedelta
from typing import Any
from router.store.postgres import POOL_SIZE, PostgresStore

async def main() -> None:
    store = PostgresStore(sys.argv[1], lease=timedelta(seconds=float(sys.argv[2])))
    await store.open()
    rows = await store.claim_due(datetime(2030, 1, 1, tzinfo=UTC), ["slack"], 100)
    print(" ".join(str(r.id) for r in rows), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def _queue(url: str, payloads: int) -> None:
    """Plan `payloads` firing groups into the outbox of the database at `url`: one row per
    payload and destination, then let the store go (its claims, none, released)."""
    core = await open_core(PostgresStore(url), SPREAD)
    try:
        for n in range(payloads):
            await core.ingest(firing_payload(1, f"g{n}"), T0 + timedelta(seconds=n), f"c{n}")
    finally:
        await core.aclose()


async def test_two_replicas_claiming_at_once_never_share_a_row_or_a_destination(
    postgres_url: str,
) -> None:
    """Each replica starts with two destinations; they claim at once, each as fast as it can,
    until the first stops working: its destinations go to the second once their lease ran
    out. Every row is claimed once, a destination's rows are sent in order by whichever
    replica, and no destination is in the hands of both at any moment."""
    await _queue(postgres_url, 25)
    replicas = [PostgresStore(postgres_url, lease=timedelta(seconds=1)) for _ in range(2)]
    for store in replicas:
        await store.open()
    in_hand: dict[str, set[Destination]] = {s.replica: set() for s in replicas}
    claimed: list[int] = []
    sent: dict[Destination, list[int]] = {}
    by_replica: dict[str, set[Destination]] = {s.replica: set() for s in replicas}

    async def claim(store: PostgresStore, limit: int) -> None:
        rows = await store.claim_due(T0 + timedelta(hours=1), ["slack"], limit)
        others = set().union(*(d for r, d in in_hand.items() if r != store.replica))
        assert not {r.destination for r in rows} & others, "a destination on two replicas"
        in_hand[store.replica] |= {r.destination for r in rows}
        by_replica[store.replica] |= {r.destination for r in rows}
        claimed.extend(r.id for r in rows)
        await asyncio.sleep(0.001)  # the other replica claims while these are in hand
        for row in rows:
            sent.setdefault(row.destination, []).append(row.id)
        await store.mark_sent_many([(r, f"ts-{r.id}", T0) for r in rows])
        in_hand[store.replica] -= {r.destination for r in rows}  # leased until it runs out

    async def work(store: PostgresStore, rounds: int | None) -> None:
        while len(claimed) < 25 * DESTINATIONS and (rounds is None or rounds > 0):
            rounds = None if rounds is None else rounds - 1
            await claim(store, 3)

    try:
        await claim(replicas[0], 2)  # destinations 0 and 1
        await claim(replicas[1], 2)  # 2 and 3
        await asyncio.wait_for(asyncio.gather(work(replicas[0], 5), work(replicas[1], None)), 120)
    finally:
        for store in replicas:
            await store.aclose()
    assert len(claimed) == len(set(claimed)) == 25 * DESTINATIONS  # each row once
    assert len(sent) == DESTINATIONS
    for ids in sent.values():  # each destination's rows in their order, whoever sent them
        assert ids == sorted(ids)
    first, second = by_replica.values()
    assert len(first) == 2 and second == set(sent)  # the second took the first's over


async def test_a_destination_stays_with_its_replica_while_its_rows_are_in_hand(
    postgres_url: str,
) -> None:
    await _queue(postgres_url, 2)
    first = PostgresStore(postgres_url, lease=timedelta(seconds=1))
    second = PostgresStore(postgres_url, lease=timedelta(seconds=1))
    await first.open()
    await second.open()
    admin = await asyncpg.connect(postgres_url)
    try:
        rows = await first.claim_due(T0 + timedelta(hours=1), ["slack"], 1)
        assert [r.destination.channel_index for r in rows] == [0]
        claimed_until = await admin.fetchval(
            "SELECT lease_until FROM outbox WHERE id=$1", rows[0].id
        )
        # The first replica renews its claim (every third of the lease): wait until the
        # database's clock is past the first lease and the claim was renewed since.
        async with asyncio.timeout(30):
            while not await admin.fetchval(
                "SELECT now()>$1 AND lease_until>$1 FROM outbox WHERE id=$2",
                claimed_until,
                rows[0].id,
            ):
                await asyncio.sleep(0.05)
        taken = await second.claim_due(T0 + timedelta(hours=1), ["slack"], 100)
        assert {r.destination.channel_index for r in taken} == {1, 2, 3}  # not the first's
        assert not any(r.taken_over for r in taken)
        # Its next row is the first replica's to send, after the one in hand.
        (following,) = await first.claim_due(T0 + timedelta(hours=1), ["slack"], 100)
        assert following.destination == rows[0].destination and following.id > rows[0].id
    finally:
        await admin.close()
        await first.aclose()
        await second.aclose()


async def test_rows_of_a_replica_killed_while_delivering_are_taken_over_after_its_lease(
    postgres_url: str,
) -> None:
    await _queue(postgres_url, 3)
    dying = subprocess.Popen(
        [sys.executable, "-c", DYING_REPLICA, postgres_url, "3"], stdout=subprocess.PIPE
    )
    try:
        assert dying.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(dying.stdout.readline), 60)
        held = sorted(int(i) for i in line.split())
        assert len(held) == 3 * DESTINATIONS
    finally:
        dying.kill()  # SIGKILL: no release, its claims stay in the database
        dying.wait()
        if dying.stdout is not None:
            dying.stdout.close()
    survivor = PostgresStore(postgres_url, lease=timedelta(seconds=1))
    await survivor.open()
    try:
        async with asyncio.timeout(30):  # the dead replica's lease runs out within 3 s
            while not (rows := await survivor.claim_due(T0 + timedelta(hours=1), ["slack"], 100)):
                await asyncio.sleep(0.05)
        assert [r.id for r in rows] == held
        assert all(r.taken_over for r in rows)
        await survivor.mark_sent_many([(r, f"ts-{r.id}", T0) for r in rows])
        assert await survivor.outbox_stats(T0) == (0, 0.0, 0)
    finally:
        await survivor.aclose()


async def test_a_replica_leaves_alone_the_rows_another_replica_took_over(postgres_url: str) -> None:
    await _queue(postgres_url, 2)
    store = PostgresStore(postgres_url)
    await store.open()
    admin = await asyncpg.connect(postgres_url)
    try:
        first, *_ = await store.claim_due(T0 + timedelta(hours=1), ["slack"], 100)
        # This replica's lease ran out and another took the destination's rows over:
        await admin.execute(
            "UPDATE outbox SET claimed_by='another' WHERE receiver=$1 AND channel=$2"
            " AND channel_index=$3",
            *first.destination,
        )
        await store.defer(first, "429", T0 + timedelta(hours=2))  # its answers come late
        await store.mark_dead(first, "refused")
        rows = await admin.fetch(
            "SELECT state, claimed_by, attempts, last_error FROM outbox WHERE receiver=$1"
            " AND channel=$2 AND channel_index=$3 ORDER BY id",
            *first.destination,
        )
        assert [tuple(r) for r in rows] == [("sending", "another", 0, None)] * 2
    finally:
        await admin.close()
        await store.aclose()


# ---------------------------------------------------------------- chat commands (any replica)


async def test_chat_commands_wake_the_planner_and_are_answered_once(postgres_url: str) -> None:
    """A command committed by one replica wakes the listening planner (NOTIFY), waits until
    answered, keeps the silence made for it, and takes exactly one answer."""
    store = PostgresStore(postgres_url)
    await store.open()
    await store.take_lease(LEASE)  # answers are the planner's to write
    try:
        await store.wait_commands(timedelta(minutes=1))  # listens; the first call looks at once
        woken = asyncio.create_task(store.wait_commands(timedelta(minutes=1)))
        actor = {"platform": "slack", "user_id": "UBOB", "name": "@bob", "place": "C0ALERTS"}
        first = await store.submit_command("ack", "k3v9x", actor, timedelta(hours=2), "disk", T0)
        await asyncio.wait_for(woken, 30)  # by the NOTIFY, long before the minute
        second = await store.submit_command("unack", "k3v9x", actor, None, "", T0)
        await store.note_silence(first, "s1")
        assert [
            (c.id, c.name, c.duration, c.silence_id, c.actor)
            for c in await store.pending_commands(10)
        ] == [
            (first, "ack", timedelta(hours=2), "s1", actor),
            (second, "unack", None, "", actor),
        ]
        assert await store.command_result(first) is None
        assert await store.finish_command(first, "✅ done", T0)
        assert not await store.finish_command(first, "again", T0)
        assert await store.command_result(first) == "✅ done"
        assert [c.id for c in await store.pending_commands(10)] == [second]
    finally:
        await store.aclose()


async def test_inbox_ids_become_visible_in_id_order_across_replicas(postgres_url: str) -> None:
    """Two replicas accept at once while a reader follows the inbox as the planner does (rows
    past the last id it saw): it sees every id, none skipped (a lower id committed after a
    higher one was read would be), and is woken by the NOTIFY of each commit."""
    replicas = [PostgresStore(postgres_url) for _ in range(2)]
    reader = PostgresStore(postgres_url)
    for store in (*replicas, reader):
        await store.open()
    woken = asyncio.Event()
    reader.watch_inbox(woken.set)
    seen: list[int] = []
    accepting = True

    async def follow() -> None:
        while accepting or await reader.inbox_after(seen[-1] if seen else 0, 1):
            seen.extend(r.id for r in await reader.inbox_after(seen[-1] if seen else 0, 1000))
            await asyncio.sleep(0)

    async def accept(store: PostgresStore, name: str) -> list[int]:
        ids = []
        for n in range(ROUNDS * 10):
            ids += await asyncio.gather(
                *(
                    store.accept(firing_payload(1, f"{name}{n}"), T0, f"{name}{n}-{i}")
                    for i in range(3)
                )
            )
        return ids

    try:
        following = asyncio.create_task(follow())
        accepted = await asyncio.gather(*(accept(s, f"r{n}-") for n, s in enumerate(replicas)))
        accepting = False
        await asyncio.wait_for(following, 30)
        assert seen == sorted(accepted[0] + accepted[1])
        await asyncio.wait_for(woken.wait(), 10)
        async with asyncio.timeout(10):  # the NOTIFYs of the last commits may still be on the way
            while reader.last_inbox_id != seen[-1]:  # from the NOTIFYs: the backlog counts them
                await asyncio.sleep(0.01)
    finally:
        for store in (*replicas, reader):
            await store.aclose()


def _rows_read(plan: dict[str, Any]) -> int:
    """The most rows any node of a plan (EXPLAIN ANALYZE, FORMAT JSON) read in one loop."""
    here = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
    return max([here, *(_rows_read(p) for p in plan.get("Plans", []))])


async def test_a_claim_reads_the_rows_it_claims_not_the_backlog(postgres_url: str) -> None:
    # A claim takes the oldest due rows. Schema 6 read every due row to find their
    # destinations and walked the primary key over the rows sent before them: each claim cost
    # the backlog and the history. From schema 7 both walk outbox_queued and stop at the limit.
    await _queue(postgres_url, 1)
    admin = await asyncpg.connect(postgres_url)
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        await admin.execute(  # 2,000 rows sent, then a backlog of 2,000
            "INSERT INTO outbox (incident_id, receiver, channel, channel_index, reason, view_id,"
            " correlation_id, created_at, state, next_attempt_at) SELECT incident_id, receiver,"
            " channel, channel_index, reason, view_id, correlation_id, created_at,"
            " CASE WHEN n <= 2000 THEN 'sent' ELSE 'queued' END, next_attempt_at"
            " FROM outbox, generate_series(1, 4000) n"
        )
        await admin.execute("ANALYZE outbox")
        queries: list[tuple[str, tuple[Any, ...]]] = []
        assert store._pool is not None
        async with contextlib.AsyncExitStack() as stack:  # every connection of the pool
            for _ in range(POOL_SIZE):
                conn = await stack.enter_async_context(store._pool.acquire())
                conn.add_query_logger(lambda q: queries.append((q.query, q.args)))
        rows = await store.claim_due(T0 + timedelta(hours=1), ["slack"], 10)
        assert len(rows) == 10 and [r.id for r in rows] == sorted(r.id for r in rows)
        claim = [(q, a) for q, a in queries if "outbox" in q and "WHERE state='queued'" in q]
        assert len(claim) == 2  # the destinations, then the rows
        for query, args in claim:
            run = admin.transaction()  # rolled back: what EXPLAIN ANALYZE claims stays queued
            await run.start()
            [plan] = orjson.loads(
                await admin.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
            )
            await run.rollback()
            assert _rows_read(plan["Plan"]) <= 20, query
    finally:
        await admin.close()
        await store.aclose()
