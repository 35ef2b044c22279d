"""The SQLite store: state survives a reopen, retention prunes only what is old and finished,
and a file from a newer alert-router is refused rather than misread."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from router.config import parse_config
from router.errors import StoreError
from router.models import WebhookPayload
from router.pipeline import Pipeline
from router.store import Store

from .helpers import fixture_json

CONFIG = parse_config(
    "receivers: [{name: r, slack_configs: [{bot_token: x, channel: c}]}]\nroute: {receiver: r}\n"
)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def opened(path: Path) -> Store:
    store = Store(path)
    await store.open(lambda new_id: Pipeline(CONFIG, new_id))
    return store


def payload(name: str) -> WebhookPayload:
    return WebhookPayload.model_validate(fixture_json(name))


async def test_state_survives_a_reopen(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    plan = await store.ingest(payload("firing-group-3-alerts"), T0, "c1")
    incident_id = next(iter(plan.incidents))
    await store.aclose()

    store = await opened(tmp_path / "s.db")
    assert set(store.state.alerts) == {"b3a81b17d3185542", "aedaedb479cc7e33", "caa074ae7deb267c"}
    [incident] = store.state.incidents.values()
    assert incident.id == incident_id and incident.notified == set(store.state.alerts)
    again = await store.ingest(payload("firing-group-3-alerts"), T0 + timedelta(minutes=1), "c2")
    assert again.outbox == []  # deduplicated against what was stored before the restart
    await store.aclose()


async def test_prune_forgets_only_old_finished_things(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    await store.ingest(payload("firing-group-3-alerts"), T0, "c1")
    await store.ingest(payload("mixed-firing-resolved"), T0 + timedelta(minutes=1), "c2")
    await store.ingest(
        payload("resolved-group"), T0 + timedelta(minutes=2), "c3"
    )  # incident closed
    await store.ingest(
        payload("send-resolved-false-firing"), T0 + timedelta(minutes=3), "c4"
    )  # stays open
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


def test_view_snapshot_round_trips_through_the_outbox(tmp_path: Path) -> None:
    import asyncio

    async def run() -> None:
        store = await opened(tmp_path / "s.db")
        plan = await store.ingest(payload("truncated-max-alerts-2"), T0, "c1")
        [row] = await store.claim_due(T0, ["slack"])
        assert row.view == plan.outbox[0].view
        assert orjson.loads(row.view.model_dump_json())["truncated_alerts"] == 2
        await store.aclose()

    asyncio.run(run())
