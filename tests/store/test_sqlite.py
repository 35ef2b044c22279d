"""The SQLite store's own cases: lost files and failed commits refuse payloads, the WAL stays
bounded (what both engines do is tests/store/test_contract.py)."""

from __future__ import annotations

import os
import sqlite3
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from router.config import parse_config
from router.errors import StoreError
from router.store.files import JOURNAL_LIMIT_BYTES, PAGE_SIZE
from router.store.rows import VIEW_CACHE_ALERTS, ViewCache
from router.store.schema import SCHEMA_VERSION
from router.store.sqlite import SqliteStore

from ..harness import firing_payload
from ..helpers import fixture_body, open_core

CONFIG = parse_config(
    "receivers: [{name: r, slack_configs: [{bot_token: x, channel: c}]}]\nroute: {receiver: r}\n"
)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def test_the_wal_stays_bounded_and_the_file_alone_holds_everything_after_close(
    tmp_path: Path,
) -> None:
    # SQLite checkpoints the WAL itself (every 1,000 pages) and cuts the file back to
    # JOURNAL_LIMIT_BYTES once a checkpoint restarted it; a clean stop empties it.
    core = await open_core(tmp_path / "s.db", CONFIG)
    wal = tmp_path / "s.db-wal"
    largest = 0
    for n in range(400):  # about 40 KB of WAL per payload: 16 MB written in all
        await core.ingest(fixture_body("firing-group-3-alerts"), T0 + timedelta(minutes=n), f"c{n}")
        largest = max(largest, wal.stat().st_size)
    assert largest < 2 * JOURNAL_LIMIT_BYTES
    await core.aclose()
    assert not wal.exists() or wal.stat().st_size == 0
    # Everything is in the main file: a copy of it alone has the alerts.
    copy = tmp_path / "copy.db"
    copy.write_bytes((tmp_path / "s.db").read_bytes())
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT count(*) FROM alerts").fetchone()[0] == 3


async def test_nothing_is_accepted_into_a_deleted_file(tmp_path: Path) -> None:
    core = await open_core(tmp_path / "s.db", CONFIG)
    try:
        await core.ingest(fixture_body("firing-group-3-alerts"), T0, "before")
        assert core.store.problem() is None
        (tmp_path / "s.db").unlink()
        lost = f"{tmp_path / 's.db'} was deleted while alert-router had it open"
        with pytest.raises(StoreError, match=lost):
            await core.store.accept(fixture_body("firing-group-3-alerts"), T0, "after")
        assert core.store.problem() == lost
        assert core.store.files_lost() == [lost]
    finally:
        await core.aclose()


async def test_a_failed_inbox_commit_is_a_problem_until_a_commit_works(tmp_path: Path) -> None:
    """SQLITE_FULL, as a full disk gives it: the store's connection may grow no further."""
    core = await open_core(tmp_path / "s.db", CONFIG)
    try:
        db = core.store._db
        assert db is not None
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count={pages}")
        big = orjson.loads(fixture_body("firing-group-3-alerts"))
        big["commonAnnotations"] = {"filler": os.urandom(50_000).hex()}  # packed: ~50 KB
        with pytest.raises(StoreError, match="full"):
            await core.store.accept(orjson.dumps(big), T0, "too-big")
        problem = core.store.problem()
        assert problem is not None and "the last commit to the inbox failed" in problem
        db.execute("PRAGMA max_page_count=1000000")
        await core.store.accept(fixture_body("firing-group-3-alerts"), T0, "fits")
        assert core.store.problem() is None
    finally:
        await core.aclose()


def claim_plan(db: sqlite3.Connection, claim: str) -> str:
    """SQLite's query plan of a claim (its SQL with the values in), one step a line."""
    return "\n".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {claim}"))


async def test_a_claim_walks_the_queued_rows_in_order_and_sorts_none_on_an_upgraded_file(
    tmp_path: Path,
) -> None:
    # A claim takes the oldest due rows: sorting every due row by id (an index on state and
    # next_attempt_at, schema 8) made each claim cost the whole backlog. From schema 9 it walks
    # an index of the queued rows in id order and stops at its limit.
    core = await open_core(tmp_path / "s.db", CONFIG)
    for n in range(20):
        await core.ingest(firing_payload(1, f"g{n}"), T0, f"c{n}")
    await core.aclose()
    with sqlite3.connect(tmp_path / "s.db") as db:  # as schema 8 left it
        db.executescript(
            "DROP INDEX outbox_queued; CREATE INDEX outbox_due ON outbox(state, next_attempt_at);"
            " PRAGMA user_version=8;"
        )
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    try:
        assert store._db is not None
        claims: list[str] = []
        store._db.set_trace_callback(claims.append)
        rows = await store.claim_due(T0 + timedelta(minutes=1), ["slack", "telegram"], 5)
        assert [r.correlation_id for r in rows] == [f"c{n}" for n in range(5)]
    finally:
        await store.aclose()
    [claim] = [sql for sql in claims if sql.startswith("UPDATE outbox SET state='sending'")]
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        plan = claim_plan(db, claim)
        assert "USING INDEX outbox_queued" in plan and "TEMP B-TREE" not in plan, plan
        # The same claim with schema 8's index: the sort this test is there to catch.
        db.executescript(
            "DROP INDEX outbox_queued; CREATE INDEX outbox_due ON outbox(state, next_attempt_at);"
        )
        assert "USE TEMP B-TREE FOR ORDER BY" in claim_plan(db, claim)


async def test_a_new_file_has_small_pages_and_an_earlier_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    # A commit writes every page it touches whole; either way the WAL is checkpointed once it
    # holds about JOURNAL_LIMIT_BYTES.
    with sqlite3.connect(tmp_path / "old.db") as db:  # as SQLite made files before
        db.executescript("PRAGMA page_size=4096; PRAGMA journal_mode=WAL; CREATE TABLE t (x);")
    for name, page_size in [("new.db", PAGE_SIZE), ("old.db", 4096)]:
        store = SqliteStore(tmp_path / name)
        await store.open()
        try:
            assert store._db is not None
            assert store._db.execute("PRAGMA page_size").fetchone()[0] == page_size
            (pages,) = store._db.execute("PRAGMA wal_autocheckpoint").fetchone()
            assert pages == JOURNAL_LIMIT_BYTES // page_size
        finally:
            await store.aclose()


async def test_bodies_and_views_are_packed_and_those_of_schema_9_read_back(
    tmp_path: Path,
) -> None:
    # From schema 10 the inbox's bodies and the views are zlib-compressed: a payload that
    # waited in a file of schema 9 (its body as accepted) is planned after the upgrade, and a
    # view written as text then is claimed as it was.
    core = await open_core(tmp_path / "s.db", CONFIG)
    await core.ingest(firing_payload(10, "before"), T0, "before")
    await core.aclose()
    waiting = firing_payload(10, "waiting")
    with sqlite3.connect(tmp_path / "s.db") as db:  # as schema 9 left it
        [(view_id, packed)] = db.execute("SELECT id, view FROM views").fetchall()
        assert isinstance(packed, bytes) and len(packed) < len(zlib.decompress(packed)) / 2
        db.execute(
            "UPDATE views SET view=? WHERE id=?", (zlib.decompress(packed).decode(), view_id)
        )
        db.execute(
            "INSERT INTO inbox (body, correlation_id, received_at) VALUES (?,?,?)",
            (waiting, "waiting", T0.isoformat()),
        )
        db.execute("PRAGMA user_version=9")
    core = await open_core(tmp_path / "s.db", CONFIG)
    try:
        planned = await core.planner.plan_waiting()
        assert [cid for cid, _ in planned] == ["waiting"] and len(planned[0][1].outbox) == 1
        rows = await core.store.claim_due(T0 + timedelta(minutes=1), ["slack"], 10)
        assert [(r.correlation_id, r.view.common_labels["group"]) for r in rows] == [
            ("before", "before"),
            ("waiting", "waiting"),
        ]
        assert len(rows[0].view.firing) == len(rows[1].view.firing) == 10
    finally:
        await core.aclose()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_claim_takes_the_views_the_planner_built_and_parses_only_the_others(
    tmp_path: Path,
) -> None:
    # A claim parsed each view back from its row (pydantic, ~0.1 ms a 10-alert view, holding
    # the GIL): 36 ms a claim of 200. Views just committed are now handed over as built.
    core = await open_core(tmp_path / "s.db", CONFIG)
    plans = [await core.ingest(firing_payload(10, f"group-{n}"), T0, f"c{n}") for n in range(3)]
    built = {o.view.id: o.view for p in plans for o in p.outbox}
    rows = await core.store.claim_due(T0 + timedelta(minutes=1), ["slack"], 10)
    assert [r.view for r in rows] == list(built.values())
    assert all(r.view is built[r.view.id] for r in rows)  # the very objects, not parsed
    await core.store.aclose()
    # After a restart nothing is kept: the same rows (claimed again) are parsed, equal.
    core = await open_core(tmp_path / "s.db", CONFIG)
    again = await core.store.claim_due(T0 + timedelta(minutes=1), ["slack"], 10)
    assert [r.view for r in again] == list(built.values())
    assert not any(r.view is built[r.view.id] for r in again)
    await core.store.aclose()


async def test_the_views_kept_for_claims_hold_at_most_view_cache_alerts(tmp_path: Path) -> None:
    # The cache counted views, whatever each held: 1,000 views were kept, and a 100-alert view
    # weighs ~140 KiB (tracemalloc), so 1,000 incidents queued behind a slow destination held
    # ~140 MiB more, ~1.4 GiB with 1,000-alert groups. Now it keeps VIEW_CACHE_ALERTS alerts.
    core = await open_core(tmp_path / "s.db", CONFIG)
    size = VIEW_CACHE_ALERTS // 10
    plans = [await core.ingest(firing_payload(size, f"g{n}"), T0, f"c{n}") for n in range(12)]
    built = [o.view for p in plans for o in p.outbox]
    rows = await core.store.claim_due(T0 + timedelta(minutes=1), ["slack"], 20)
    assert [r.view for r in rows] == built
    assert [r.view is b for r, b in zip(rows, built, strict=True)] == [True] * 10 + [False] * 2
    await core.aclose()


def test_the_view_cache_keeps_the_oldest_views_until_each_row_took_its_own() -> None:
    from router.models import IncidentView

    def view(n: int) -> IncidentView:
        return IncidentView.model_construct(id=f"i{n}", firing=[], resolved=[])

    views = {n: view(n) for n in range(1, 6)}
    cache = ViewCache(limit=3)
    cache.add([(1, views[1], 2), (2, views[2], 1), (3, views[3], 1), (4, views[4], 1)])
    assert len(cache) == 3  # full: view 4 is not kept (its claim parses it)
    assert cache.take(4) is None
    assert cache.take(1) is views[1] and cache.take(1) is views[1]  # two rows name view 1
    assert cache.take(1) is None
    cache.add([(5, views[5], 1)])  # room again
    cache.forget_before(3)  # a claim took view 3's row: view 2's row waits (a retry)
    assert cache.take(2) is None
    assert cache.take(3) is views[3] and cache.take(5) is views[5]
    assert len(cache) == 0 and cache.alerts == 0
