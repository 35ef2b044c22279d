"""The PostgreSQL store's own cases: one migration under a lock when replicas start together,
a lost lock refuses payloads, errors name the database and never its password, connections the
server ends while the router writes, delivery claims of a replica killed while delivering taken
over after their lease."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from router.config import parse_config
from router.errors import StoreError
from router.store.postgres import PostgresStore
from router.store.postgres_schema import SCHEMA_VERSION, migrate

from ..harness import firing_payload
from ..helpers import fixture_body, open_core
from ..postgres import PostgresServer, end_the_routers_lock

T0 = datetime(2026, 11, 1, tzinfo=UTC)
ROUNDS = 20


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


async def test_a_lost_lock_refuses_payloads(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        await store.accept(fixture_body("firing-group-3-alerts"), T0, "before")
        await end_the_routers_lock(postgres_url)
        lost = (
            f"{postgres_url}: the connection holding alert-router's lock on it was lost;"
            " restart alert-router to take it again"
        )
        for _ in range(100):  # the connection notices the server closed it (bounded wait)
            if store.problem() is not None:
                break
            await asyncio.sleep(0.05)
        assert store.problem() == lost and store.files_lost() == [lost]
        with pytest.raises(StoreError, match=lost):
            await store.accept(fixture_body("firing-group-3-alerts"), T0, "after")
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
from router.store.postgres import PostgresStore

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
