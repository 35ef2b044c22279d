"""The SQLite store: one router per file, lost files and failed commits refuse payloads, the WAL
stays bounded, retention prunes only what is old and finished, a newer file is refused."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from router.config import parse_config
from router.errors import StoreError
from router.store.files import JOURNAL_LIMIT_BYTES
from router.store.sqlite import SqliteStore

from ..helpers import fixture_body, open_core

CONFIG = parse_config(
    "receivers: [{name: r, slack_configs: [{bot_token: x, channel: c}]}]\nroute: {receiver: r}\n"
)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def test_prune_forgets_only_old_finished_things(tmp_path: Path) -> None:
    core = await open_core(tmp_path / "s.db", CONFIG)
    await core.ingest(fixture_body("firing-group-3-alerts"), T0, "c1")
    await core.ingest(fixture_body("mixed-firing-resolved"), T0 + timedelta(minutes=1), "c2")
    await core.ingest(
        fixture_body("resolved-group"), T0 + timedelta(minutes=2), "c3"
    )  # incident closed
    await core.ingest(
        fixture_body("send-resolved-false-firing"), T0 + timedelta(minutes=3), "c4"
    )  # stays open
    rows = await core.store.claim_due(T0 + timedelta(minutes=4), ["slack"])
    await core.store.mark_sent_many([(r, f"C1:{r.id}", T0 + timedelta(minutes=4)) for r in rows])

    assert (
        await core.store.prune(timedelta(days=7), T0 + timedelta(days=6)) == 0
    )  # nothing old enough
    removed = await core.store.prune(timedelta(days=7), T0 + timedelta(days=8))
    await core.aclose()
    with sqlite3.connect(tmp_path / "s.db") as db:
        incidents = db.execute("SELECT status FROM incidents").fetchall()
        alerts = db.execute("SELECT status, count(*) FROM alerts GROUP BY status").fetchall()
        outbox = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        messages = db.execute("SELECT count(*) FROM messages").fetchone()[0]
    assert removed == 3 + 1 + 3  # 3 deliveries, 1 incident, 3 resolved alerts
    assert incidents == [("firing",)] and alerts == [("firing", 2)]
    assert outbox == 1 and messages == 1  # the open incident's


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="schema version 99 is newer than this alert-router knows"):
        await open_core(tmp_path / "s.db", CONFIG)


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


async def test_a_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    first = await open_core(tmp_path / "s.db", CONFIG)
    second = SqliteStore(tmp_path / "s.db")
    with pytest.raises(StoreError, match=r"s\.db\.lock: another alert-router \(pid \d+\)"):
        await second.open()
    await second.aclose()
    await first.aclose()
    third = await open_core(tmp_path / "s.db", CONFIG)  # free once the first is closed
    await third.aclose()


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
        big["commonAnnotations"] = {"filler": "x" * 100_000}
        with pytest.raises(StoreError, match="full"):
            await core.store.accept(orjson.dumps(big), T0, "too-big")
        problem = core.store.problem()
        assert problem is not None and "the last commit to the inbox failed" in problem
        db.execute("PRAGMA max_page_count=1000000")
        await core.store.accept(fixture_body("firing-group-3-alerts"), T0, "fits")
        assert core.store.problem() is None
    finally:
        await core.aclose()
