"""The SQLite store: state survives a reopen, retention prunes only what is old and finished,
and a file from a newer alert-router is refused rather than misread."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from router.config import parse_config
from router.db import JOURNAL_LIMIT_BYTES
from router.errors import StoreError
from router.pipeline import Pipeline
from router.state import Plan
from router.store import SCHEMA, SCHEMA_VERSION, Store

from .helpers import fixture_body, waiting_in_inbox

CONFIG = parse_config(
    "receivers: [{name: r, slack_configs: [{bot_token: x, channel: c}]}]\nroute: {receiver: r}\n"
)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def opened(path: Path) -> Store:
    store = Store(path)
    await store.open(lambda new_id: Pipeline(CONFIG, new_id))
    return store


async def ingest(store: Store, name: str, at: datetime, correlation_id: str) -> Plan:
    """Accept a captured payload as the webhook does, and wait (bounded) for its plan."""
    done: asyncio.Future[Plan] = asyncio.get_running_loop().create_future()

    def planned(cid: str, plan: Plan) -> None:
        if cid == correlation_id:
            done.set_result(plan)

    store.on_planned = planned
    await store.accept(fixture_body(name), at, correlation_id)
    return await asyncio.wait_for(done, 5.0)


async def test_state_survives_a_reopen(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    plan = await ingest(store, "firing-group-3-alerts", T0, "c1")
    incident_id = next(iter(plan.incidents))
    await store.aclose()

    store = await opened(tmp_path / "s.db")
    assert set(store.state.alerts) == {"b3a81b17d3185542", "aedaedb479cc7e33", "caa074ae7deb267c"}
    [incident] = store.state.incidents.values()
    assert incident.id == incident_id and incident.notified == set(store.state.alerts)
    again = await ingest(store, "firing-group-3-alerts", T0 + timedelta(minutes=1), "c2")
    assert again.outbox == []  # deduplicated against what was stored before the restart
    await store.aclose()


async def test_prune_forgets_only_old_finished_things(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    await ingest(store, "firing-group-3-alerts", T0, "c1")
    await ingest(store, "mixed-firing-resolved", T0 + timedelta(minutes=1), "c2")
    await ingest(store, "resolved-group", T0 + timedelta(minutes=2), "c3")  # incident closed
    await ingest(store, "send-resolved-false-firing", T0 + timedelta(minutes=3), "c4")  # stays open
    rows = await store.claim_due(T0 + timedelta(minutes=4), ["slack"])
    await store.mark_sent_many([(r, f"C1:{r.id}", T0 + timedelta(minutes=4)) for r in rows])

    assert await store.prune(timedelta(days=7), T0 + timedelta(days=6)) == 0  # nothing old enough
    removed = await store.prune(timedelta(days=7), T0 + timedelta(days=8))
    await store.aclose()
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
        await opened(tmp_path / "s.db")


async def test_view_snapshot_round_trips_through_the_outbox(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    plan = await ingest(store, "truncated-max-alerts-2", T0, "c1")
    [row] = await store.claim_due(T0, ["slack"])
    assert row.view == plan.outbox[0].view
    assert orjson.loads(row.view.model_dump_json())["truncated_alerts"] == 2
    await store.aclose()


def set_aside(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT correlation_id, error FROM set_aside ORDER BY id").fetchall()


async def opened_and_planned(path: Path, count: int) -> tuple[Store, list[tuple[str, Plan]]]:
    """Open the store at `path` and wait (bounded: 2 s) until it has planned `count` payloads
    left in its inbox; the store, and (correlation id, plan) of each, in order."""
    store = Store(path)
    planned: list[tuple[str, Plan]] = []
    store.on_planned = lambda cid, plan: planned.append((cid, plan))
    await store.open(lambda new_id: Pipeline(CONFIG, new_id))
    for _ in range(200):
        if len(planned) >= count:
            break
        await asyncio.sleep(0.01)
    return store, planned


async def test_payloads_accepted_before_a_crash_are_planned_at_the_next_start(
    tmp_path: Path,
) -> None:
    # What a crash between the 200 and the planning leaves: payloads in the inbox only.
    store = await opened(tmp_path / "s.db")
    await store.aclose()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.executemany(
            "INSERT INTO inbox (body, correlation_id, received_at) VALUES (?,?,?)",
            [
                (fixture_body("firing-group-3-alerts"), "before-crash-1", T0.isoformat()),
                (fixture_body("mixed-firing-resolved"), "before-crash-2", T0.isoformat()),
            ],
        )
    store, planned = await opened_and_planned(tmp_path / "s.db", 2)
    assert [cid for cid, _ in planned] == ["before-crash-1", "before-crash-2"]  # in order
    assert len(planned[0][1].outbox) == 1 and store.backlog == 0
    assert len(store.state.incidents) == 1
    await store.aclose()
    assert waiting_in_inbox(tmp_path / "s.db") == []


async def test_a_payload_that_cannot_be_planned_is_kept_aside_and_the_rest_go_on(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path / "s.db")
    failed: list[tuple[str, str]] = []
    store.on_failed = lambda cid, error: failed.append((cid, error))
    # Accepted by an older version, unreadable by this one: it must not block the inbox.
    await store.accept(b'{"version": "4", "alerts": "not a list"}', T0, "poison")
    plan = await ingest(store, "firing-group-3-alerts", T0, "after-it")
    assert len(plan.outbox) == 1
    assert [cid for cid, _ in failed] == ["poison"] and "alerts" in failed[0][1]
    assert store.backlog == 0
    await store.aclose()
    [(cid, error)] = set_aside(tmp_path / "s.db")
    assert cid == "poison" and "alerts" in error  # kept, with why, for a person to look at
    assert waiting_in_inbox(tmp_path / "s.db") == []


async def test_the_wal_stays_bounded_and_the_file_alone_holds_everything_after_close(
    tmp_path: Path,
) -> None:
    # SQLite checkpoints the WAL itself (every 1,000 pages) and cuts the file back to
    # JOURNAL_LIMIT_BYTES once a checkpoint restarted it; a clean stop empties it.
    store = await opened(tmp_path / "s.db")
    wal = tmp_path / "s.db-wal"
    largest = 0
    for n in range(400):  # about 40 KB of WAL per payload: 16 MB written in all
        await ingest(store, "firing-group-3-alerts", T0 + timedelta(minutes=n), f"c{n}")
        largest = max(largest, wal.stat().st_size)
    assert largest < 2 * JOURNAL_LIMIT_BYTES
    await store.aclose()
    assert not wal.exists() or wal.stat().st_size == 0
    # Everything is in the main file: a copy of it alone has the alerts.
    copy = tmp_path / "copy.db"
    copy.write_bytes((tmp_path / "s.db").read_bytes())
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT count(*) FROM alerts").fetchone()[0] == 3


@contextlib.contextmanager
def old_store(path: Path, version: int) -> Iterator[sqlite3.Connection]:
    """A store file as an earlier alert-router left it, at schema `version`, open for the block."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for number, script in enumerate(SCHEMA[:version], start=1):
            db.executescript(f"BEGIN;{script};PRAGMA user_version={number};COMMIT;")
        yield db


async def test_a_schema_4_inbox_is_carried_into_the_inbox_table_and_planned(
    tmp_path: Path,
) -> None:
    # Schema 4 kept the inbox in the store's file: an upgrade must plan what waited there and
    # keep what had been set aside.
    with old_store(tmp_path / "s.db", 4) as db:
        db.executemany(
            "INSERT INTO inbox (body, correlation_id, received_at, failed) VALUES (?,?,?,?)",
            [
                (b"{}", "set-aside-by-v4", T0.isoformat(), "alerts: field required"),
                (fixture_body("firing-group-3-alerts"), "waiting-in-v4", T0.isoformat(), None),
            ],
        )
    store, planned = await opened_and_planned(tmp_path / "s.db", 1)
    assert [cid for cid, _ in planned] == ["waiting-in-v4"] and len(store.state.incidents) == 1
    await store.aclose()
    assert set_aside(tmp_path / "s.db") == [("set-aside-by-v4", "alerts: field required")]
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT name FROM sqlite_master WHERE name='inbox_v4'").fetchone() is None
    assert waiting_in_inbox(tmp_path / "s.db") == []


async def test_the_inbox_file_of_schema_6_is_carried_into_the_store_and_planned(
    tmp_path: Path,
) -> None:
    # Versions with schema 5-6 kept the inbox in `<store>.inbox`: an upgrade in place plans
    # what waited there past the watermark (in order) and removes the file.
    with old_store(tmp_path / "s.db", 6) as db:
        db.execute("UPDATE inbox_planned SET through=1")
    with sqlite3.connect(tmp_path / "s.db.inbox") as db:
        db.execute(
            "CREATE TABLE inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL,"
            " correlation_id TEXT NOT NULL, received_at TEXT NOT NULL)"
        )
        db.executemany(
            "INSERT INTO inbox (body, correlation_id, received_at) VALUES (?,?,?)",
            [
                (fixture_body("firing-group-3-alerts"), "planned-by-v6", T0.isoformat()),
                (fixture_body("firing-group-3-alerts"), "waiting-in-v6", T0.isoformat()),
                (fixture_body("mixed-firing-resolved"), "also-waiting", T0.isoformat()),
            ],
        )
    store, planned = await opened_and_planned(tmp_path / "s.db", 2)
    assert [cid for cid, _ in planned] == ["waiting-in-v6", "also-waiting"]
    await store.aclose()
    assert not (tmp_path / "s.db.inbox").exists()
    assert waiting_in_inbox(tmp_path / "s.db") == []


async def test_a_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    first = await opened(tmp_path / "s.db")
    second = Store(tmp_path / "s.db")
    with pytest.raises(StoreError, match=r"s\.db\.lock: another alert-router \(pid \d+\)"):
        await second.open(lambda new_id: Pipeline(CONFIG, new_id))
    await second.aclose()
    await first.aclose()
    third = await opened(tmp_path / "s.db")  # free once the first is closed
    await third.aclose()


async def test_nothing_is_accepted_into_a_deleted_file(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    try:
        await ingest(store, "firing-group-3-alerts", T0, "before")
        assert store.problem() is None
        (tmp_path / "s.db").unlink()
        lost = f"{tmp_path / 's.db'} was deleted while alert-router had it open"
        with pytest.raises(StoreError, match=lost):
            await store.accept(fixture_body("firing-group-3-alerts"), T0, "after")
        assert store.problem() == lost
        assert store.files_lost() == [lost]
    finally:
        await store.aclose()


async def test_a_failed_inbox_commit_is_a_problem_until_a_commit_works(tmp_path: Path) -> None:
    """SQLITE_FULL, as a full disk gives it: the store's connection may grow no further."""
    store = await opened(tmp_path / "s.db")
    try:
        db = store._db
        assert db is not None
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count={pages}")
        big = orjson.loads(fixture_body("firing-group-3-alerts"))
        big["commonAnnotations"] = {"filler": "x" * 100_000}
        with pytest.raises(StoreError, match="full"):
            await store.accept(orjson.dumps(big), T0, "too-big")
        problem = store.problem()
        assert problem is not None and "the last commit to the inbox failed" in problem
        db.execute("PRAGMA max_page_count=1000000")
        await store.accept(fixture_body("firing-group-3-alerts"), T0, "fits")
        assert store.problem() is None
    finally:
        await store.aclose()
