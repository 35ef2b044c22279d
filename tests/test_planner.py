"""The planner: inbox payloads planned in arrival order, each plan committed with the watermark;
state that survives a restart; payloads left by a crash or an earlier version planned at start."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from router.config import parse_config
from router.intake import parse_payload
from router.metrics import Metrics
from router.models import WebhookPayload
from router.outcomes import Outcomes
from router.pipeline import Pipeline
from router.planner import Planner
from router.roles import Role
from router.store.rows import pack
from router.store.schema import SCHEMA, SCHEMA_VERSION

from .harness import firing_payload
from .helpers import fixture_body, open_core, waiting_in_inbox

CONFIG = parse_config(
    "receivers: [{name: r, slack_configs: [{bot_token: x, channel: c}]}]\nroute: {receiver: r}\n"
)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def test_state_survives_a_reopen(tmp_path: Path) -> None:
    core = await open_core(tmp_path / "s.db", CONFIG)
    plan = await core.ingest(fixture_body("firing-group-3-alerts"), T0, "c1")
    incident_id = next(iter(plan.incidents))
    await core.aclose()

    core = await open_core(tmp_path / "s.db", CONFIG)
    assert set(core.planner.state.alerts) == {
        "b3a81b17d3185542",
        "aedaedb479cc7e33",
        "caa074ae7deb267c",
    }
    [incident] = core.planner.state.incidents.values()
    assert incident.id == incident_id and incident.notified == set(core.planner.state.alerts)
    again = await core.ingest(
        fixture_body("firing-group-3-alerts"), T0 + timedelta(minutes=1), "c2"
    )
    assert again.outbox == []  # deduplicated against what was stored before the restart
    await core.aclose()


async def test_view_snapshot_round_trips_through_the_outbox(tmp_path: Path) -> None:
    core = await open_core(tmp_path / "s.db", CONFIG)
    plan = await core.ingest(fixture_body("truncated-max-alerts-2"), T0, "c1")
    [row] = await core.store.claim_due(T0, ["slack"])
    assert row.view == plan.outbox[0].view
    assert orjson.loads(row.view.model_dump_json())["truncated_alerts"] == 2
    await core.aclose()


def set_aside(path: Path) -> list[tuple[str, str]]:
    """(correlation id, error) of each payload set aside in the store at `path`."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT correlation_id, error FROM set_aside ORDER BY id").fetchall()


async def test_payloads_accepted_before_a_crash_are_planned_at_the_next_start(
    tmp_path: Path,
) -> None:
    # What a crash between the 200 and the planning leaves: payloads in the inbox only.
    core = await open_core(tmp_path / "s.db", CONFIG)
    await core.aclose()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.executemany(
            "INSERT INTO inbox (body, correlation_id, received_at) VALUES (?,?,?)",
            [
                (pack(fixture_body("firing-group-3-alerts")), "before-crash-1", T0.isoformat()),
                (pack(fixture_body("mixed-firing-resolved")), "before-crash-2", T0.isoformat()),
            ],
        )
    core = await open_core(tmp_path / "s.db", CONFIG)
    planned = await core.planner.plan_waiting()
    assert [cid for cid, _ in planned] == ["before-crash-1", "before-crash-2"]  # in order
    assert len(planned[0][1].outbox) == 1 and core.planner.backlog == 0
    assert len(core.planner.state.incidents) == 1
    await core.aclose()
    assert waiting_in_inbox(tmp_path / "s.db") == []


async def test_a_payload_that_cannot_be_planned_is_kept_aside_and_the_rest_go_on(
    tmp_path: Path,
) -> None:
    core = await open_core(tmp_path / "s.db", CONFIG)
    # Accepted by an older version, unreadable by this one: it must not block the inbox.
    await core.store.accept(b'{"version": "4", "alerts": "not a list"}', T0, "poison")
    plan = await core.ingest(fixture_body("firing-group-3-alerts"), T0, "after-it")
    assert len(plan.outbox) == 1
    failed = core.outcomes.get("poison")
    assert failed is not None and failed["state"] == "failed" and "alerts" in failed["error"]
    assert core.planner.backlog == 0
    await core.aclose()
    [(cid, error)] = set_aside(tmp_path / "s.db")
    assert cid == "poison" and "alerts" in error  # kept, with why, for a person to look at
    assert waiting_in_inbox(tmp_path / "s.db") == []


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
    core = await open_core(tmp_path / "s.db", CONFIG)
    planned = await core.planner.plan_waiting()
    assert [cid for cid, _ in planned] == ["waiting-in-v4"] and len(
        core.planner.state.incidents
    ) == 1
    await core.aclose()
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
    core = await open_core(tmp_path / "s.db", CONFIG)
    planned = await core.planner.plan_waiting()
    assert [cid for cid, _ in planned] == ["waiting-in-v6", "also-waiting"]
    await core.aclose()
    assert not (tmp_path / "s.db.inbox").exists()
    assert waiting_in_inbox(tmp_path / "s.db") == []


async def test_a_backlog_past_the_memory_bound_is_parsed_again_from_the_inbox(
    tmp_path: Path,
) -> None:
    bodies = [firing_payload(3, f"g{n}") for n in range(6)]
    core = await open_core(tmp_path / "s.db", CONFIG, parsed_bytes=2 * len(bodies[0]))
    for n, body in enumerate(bodies):
        await core.planner.accept(body, T0, f"c{n}", WebhookPayload.model_validate_json(body))
    assert 0 < core.planner.parsed_bytes <= 2 * len(bodies[0])  # the rest only in the inbox

    planned = await core.planner.plan_waiting()
    assert [cid for cid, _ in planned] == [f"c{n}" for n in range(6)]  # in order, all of them
    assert all(len(plan.outbox) == 1 for _, plan in planned)
    assert len(core.planner.state.alerts) == 18 and core.planner.parsed_bytes == 0
    await core.aclose()


async def test_a_payload_intake_accepts_is_planned_from_its_stored_body_as_well(
    tmp_path: Path,
) -> None:
    # Alertmanager's payload may grow fields intake ignores; nested 300 deep, intake's parser
    # (orjson, up to 1,024) reads it, and the body parsed again from the inbox (a restart, a
    # backlog past PARSED_BYTES) must be read the same way, not set aside.
    body = firing_payload(3, "deep")[:-1] + b',"extra":' + b"[" * 300 + b"]" * 300 + b"}"
    payload = parse_payload("application/json", body)  # answered 200
    core = await open_core(tmp_path / "s.db", CONFIG, parsed_bytes=0)  # keeps none parsed
    await core.planner.accept(body, T0, "deep", payload)
    planned = await core.planner.plan_waiting()
    assert [cid for cid, _ in planned] == ["deep"] and len(planned[0][1].outbox) == 1
    await core.aclose()
    assert set_aside(tmp_path / "s.db") == []


async def test_a_payload_planned_from_its_body_before_accept_returned_is_not_kept_parsed(
    tmp_path: Path,
) -> None:
    # The planner can read a row the moment it is committed, before accept() returns to keep
    # the parsed payload: it plans it from its body, and nothing is kept for a planned row
    # (kept, it would hold memory and fill PARSED_BYTES for ever, 47 of 50 rows here before).
    core = await open_core(tmp_path / "s.db", CONFIG)
    for n in range(20):
        body = firing_payload(3, f"g{n}")
        payload = WebhookPayload.model_validate_json(body)
        accepting = asyncio.create_task(core.planner.accept(body, T0, f"c{n}", payload))
        await asyncio.sleep(0)  # the insert is handed to the store thread first
        planning = asyncio.create_task(core.planner.plan_waiting())  # its read follows it
        await asyncio.gather(accepting, planning)
        await core.planner.plan_waiting()
    assert core.planner.backlog == 0 and len(core.planner.state.alerts) == 60
    assert core.planner.parsed_bytes == 0
    await core.aclose()


async def test_a_replica_that_takes_the_lease_plans_once_the_state_of_its_epoch_is_loaded(
    tmp_path: Path,
) -> None:
    # Chat-ops asks `planning` before applying an ack: between taking the lease and loading
    # the state, the replica has no incidents, and an ack answered then was lost.
    core = await open_core(tmp_path / "s.db", CONFIG)
    plan = await core.ingest(fixture_body("firing-group-3-alerts"), T0, "c1")
    [incident_id] = plan.incidents
    taker = Planner(
        core.store,
        lambda new_id: Pipeline(CONFIG, new_id),
        wake_outbox=asyncio.Event(),
        outcomes=Outcomes(),
        metrics=Metrics(),
    )
    role = Role()
    following = asyncio.create_task(taker.follow(role))
    try:
        await asyncio.sleep(0)  # follow() runs as a standby
        assert not taker.planning
        role.take(7)
        assert role.is_planner and not taker.planning  # the lease, not the state yet
        async with asyncio.timeout(10):
            while not taker.planning:
                await asyncio.sleep(0.01)
        assert taker.state.open_incident(incident_id) is not None
        role.lose()
        assert not taker.planning  # the epoch it loaded is no longer held
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await taker.aclose()
        await core.aclose()
