"""router/store/rows.py: alerts, incidents and plans written as rows and read back unchanged;
the read API's JSON shapes of them."""

from __future__ import annotations

import contextlib
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.models import Reason
from router.state import AlertState, Destination, IncidentState, OutboxItem, Plan
from router.store.files import connect
from router.store.rows import (
    ALERT_COLUMNS,
    INCIDENT_COLUMNS,
    NOTIFICATION_COLUMNS,
    alert_from_row,
    alert_json,
    alert_values,
    incident_from_row,
    incident_json,
    incident_values,
    incidents_json,
    notification_json,
    pack,
    unpack,
    upsert,
    write_plan,
)
from router.store.schema import migrate

from ..incidents import alert, incident

T0 = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)

FIRING = AlertState(
    fingerprint="b3a81b17d3185542",
    labels={"alertname": "DiskFull", "instance": "db-1", "é": "ü"},
    annotations={"summary": "disk 95% full"},
    status="firing",
    starts_at=T0 - timedelta(minutes=5),
    ends_at=None,
    generator_url="http://prometheus:9090/graph",
    first_seen=T0,
    last_seen=T0 + timedelta(seconds=30),
    inhibited_by="aedaedb479cc7e33",
    receivers=["team-b", "team-a"],  # route-tree order, not sorted
)
ACKED = IncidentState(
    id="k3v9x",
    receiver="team-a",
    am_receiver="alert-router",
    group_key='{}:{alertname="DiskFull"}',
    opened_at=T0,
    alerts={"b", "a"},
    notified={"a"},
    last_notified_at=T0 + timedelta(minutes=1),
    group_labels={"alertname": "DiskFull"},
    common_labels={"alertname": "DiskFull", "severity": "critical"},
    common_annotations={"summary": "x"},
    external_url="http://am:9093",
    truncated_alerts=2,
    acked_by="bob",
    acked_at=T0 + timedelta(minutes=2),
    ack_via="telegram:-100",
    ack_comment="looking",
    silence_id="s-1",
    escalated_at=T0 + timedelta(minutes=3),
    escalated_to="managers",
)
FRESH = IncidentState(id="q7w2e", receiver="r", am_receiver="am", group_key="{}:{}", opened_at=T0)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = str(tmp_path / "s.db")
    with contextlib.closing(connect(path, "normal")) as conn:
        migrate(conn, path)
        yield conn


RESOLVED = AlertState(
    fingerprint="f",
    labels={"a": "1"},
    annotations={},
    status="resolved",
    starts_at=T0,
    ends_at=T0 + timedelta(hours=1),
    generator_url="",
    first_seen=T0,
    last_seen=T0,
)


@pytest.mark.parametrize(
    ("table", "columns", "values", "from_row", "state"),
    [
        ("alerts", ALERT_COLUMNS, alert_values, alert_from_row, FIRING),
        ("alerts", ALERT_COLUMNS, alert_values, alert_from_row, RESOLVED),
        ("incidents", INCIDENT_COLUMNS, incident_values, incident_from_row, ACKED),
        ("incidents", INCIDENT_COLUMNS, incident_values, incident_from_row, FRESH),
    ],
)
def test_a_row_reads_back_as_it_was(
    db: sqlite3.Connection,
    table: str,
    columns: list[str],
    values: Callable[[Any], tuple[Any, ...]],
    from_row: Callable[[tuple[Any, ...]], Any],
    state: Any,
) -> None:
    row = values(state)
    assert len(row) == len(columns)
    names, marks = ",".join(columns), ",".join("?" * len(row))
    db.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", row)
    [stored] = db.execute(f"SELECT {names} FROM {table}").fetchall()
    assert from_row(stored) == state


def test_sets_are_stored_sorted_and_never_notified_is_null() -> None:
    values = dict(zip(INCIDENT_COLUMNS, incident_values(ACKED), strict=True))
    assert values["alerts"] == '["a","b"]' and values["notified"] == '["a"]'
    assert dict(zip(INCIDENT_COLUMNS, incident_values(FRESH), strict=True))["notified"] is None
    labels = dict(zip(ALERT_COLUMNS, alert_values(FIRING), strict=True))["labels"]
    assert labels == '{"alertname":"DiskFull","instance":"db-1","é":"ü"}'  # keys sorted


def test_alert_json_uses_alertmanagers_names() -> None:
    assert alert_json(FIRING) == {
        "fingerprint": "b3a81b17d3185542",
        "labels": {"alertname": "DiskFull", "instance": "db-1", "é": "ü"},
        "annotations": {"summary": "disk 95% full"},
        "status": "firing",
        "startsAt": "2026-11-23T06:55:00+00:00",
        "endsAt": None,
        "generatorURL": "http://prometheus:9090/graph",
        "inhibited_by": "aedaedb479cc7e33",
        "receivers": ["team-b", "team-a"],
        "first_seen": "2026-11-23T07:00:00+00:00",
        "last_seen": "2026-11-23T07:00:30+00:00",
    }


def test_incident_json_and_empty_texts_as_null() -> None:
    assert incident_json(FRESH, []) == {
        "id": "q7w2e",
        "receiver": "r",
        "alertmanager_receiver": "am",
        "group_key": "{}:{}",
        "status": "firing",
        "opened_at": "2026-11-23T07:00:00+00:00",
        "resolved_at": None,
        "acked_by": None,
        "acked_at": None,
        "ack_via": None,
        "ack_comment": None,
        "silence_id": None,
        "escalated_to": None,
        "escalated_at": None,
        "alerts": [],
        "group_labels": {},
        "notifications": [],
    }
    acked = incident_json(ACKED, [{"id": 1}])
    assert (acked["ack_via"], acked["silence_id"], acked["escalated_to"]) == (
        "telegram:-100",
        "s-1",
        "managers",
    )
    assert acked["alerts"] == ["a", "b"] and acked["notifications"] == [{"id": 1}]


def test_notifications_go_with_their_incident_in_order() -> None:
    keys = NOTIFICATION_COLUMNS.split(", ")
    assert notification_json(("k3v9x", 7, "slack", 0, "first", "sent", 1, None, "t1", "t2")) == {
        "id": 7,
        "channel": "slack",
        "channel_index": 0,
        "reason": "first",
        "state": "sent",
        "attempts": 1,
        "last_error": None,
        "created_at": "t1",
        "sent_at": "t2",
    }
    assert keys[0] == "incident_id"
    rows = [incident_values(ACKED), incident_values(FRESH)]
    notes = [
        ("q7w2e", 3, "telegram", 0, "first", "queued", 0, None, "t", None),
        ("k3v9x", 1, "slack", 0, "first", "sent", 1, None, "t", "t"),
        ("k3v9x", 2, "slack", 0, "acked", "sent", 1, None, "t", "t"),
    ]
    out = incidents_json(rows, notes)
    assert [i["id"] for i in out] == ["k3v9x", "q7w2e"]
    assert [n["id"] for n in out[0]["notifications"]] == [1, 2]
    assert [n["id"] for n in out[1]["notifications"]] == [3]
    with pytest.raises(ValueError):  # a row of other columns is not silently cut
        notification_json(("k3v9x", 1, "slack"))


def test_a_plan_is_written_with_one_view_per_shared_snapshot(db: sqlite3.Connection) -> None:
    view = incident(alert(), id="k3v9x", correlation_id="c-1")
    resolved = view.model_copy(update={"reason": Reason.RESOLVED})
    plan = Plan(
        alerts={FIRING.fingerprint: FIRING},
        incidents={ACKED.id: ACKED},
        outbox=[  # two destinations share one snapshot; the third has its own
            OutboxItem("k3v9x", Destination("team-a", "slack", 0), view),
            OutboxItem("k3v9x", Destination("team-a", "telegram", 1), view),
            OutboxItem("k3v9x", Destination("team-a", "slack", 0), resolved),
        ],
    )
    with db:
        db.execute("BEGIN")
        write_plan(db, plan, T0)
    assert [
        alert_from_row(r) for r in db.execute(f"SELECT {','.join(ALERT_COLUMNS)} FROM alerts")
    ] == [FIRING]
    rows = db.execute(
        "SELECT o.incident_id, o.receiver, o.channel, o.channel_index, o.reason, o.state,"
        " o.correlation_id, o.created_at, o.next_attempt_at, v.view"
        " FROM outbox o JOIN views v ON v.id = o.view_id ORDER BY o.id"
    ).fetchall()
    ts0 = T0.isoformat()
    assert [r[:9] for r in rows] == [
        ("k3v9x", "team-a", "slack", 0, "first", "queued", "c-1", ts0, ts0),
        ("k3v9x", "team-a", "telegram", 1, "first", "queued", "c-1", ts0, ts0),
        ("k3v9x", "team-a", "slack", 0, "resolved", "queued", "c-1", ts0, ts0),
    ]
    assert db.execute("SELECT count(*) FROM views").fetchone() == (2,)
    assert orjson.loads(unpack(rows[2][9]))["reason"] == "resolved"
    # written again (the next plan of the same incident): rows updated in place, not doubled
    rowids = db.execute("SELECT rowid FROM alerts UNION ALL SELECT rowid FROM incidents").fetchall()
    later = replace(ACKED, acked_by="carol")
    with db:
        db.execute("BEGIN")
        write_plan(db, Plan(alerts={FIRING.fingerprint: FIRING}, incidents={later.id: later}), T0)
    assert (
        db.execute("SELECT rowid FROM alerts UNION ALL SELECT rowid FROM incidents").fetchall()
        == rowids
    )
    [row] = db.execute(f"SELECT {','.join(INCIDENT_COLUMNS)} FROM incidents").fetchall()
    assert incident_from_row(row) == later


def test_upsert_updates_every_column_but_the_key() -> None:
    assert upsert("t", ["id", "a", "b"], ["$1", "$2", "$3"]) == (
        "INSERT INTO t (id, a, b) VALUES ($1, $2, $3)"
        " ON CONFLICT (id) DO UPDATE SET a=EXCLUDED.a, b=EXCLUDED.b"
    )


def test_pack_and_unpack() -> None:
    body = b'{"alerts": "' + b"x" * 4000 + b'"}'
    assert unpack(pack(body)) == body and len(pack(body)) < len(body) // 10
    with pytest.raises(zlib.error):
        unpack(body)  # text written before packing: not read as packed
