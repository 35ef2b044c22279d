"""The PostgreSQL store's own cases: one migration under a lock when replicas start together,
a lost lock refuses payloads, errors name the database and never its password, connections the
server ends while the router writes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from router.errors import StoreError
from router.store.postgres import PostgresStore
from router.store.postgres_schema import SCHEMA_VERSION, migrate

from ..harness import firing_payload
from ..helpers import fixture_body
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
