"""Rows <-> state: how alerts, incidents and plans are written to the store's tables and read back."""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

from router.models import IncidentView
from router.state import AlertState, IncidentState, OutboxItem, Plan
from router.store.files import ts


def pack(data: bytes) -> bytes:
    """A payload body or a rendered view as SQLite stores it: zlib-compressed (JSON of several
    KiB shrinks several times, and every page a commit touches is written whole)."""
    return zlib.compress(data, 1)


def unpack(data: bytes) -> bytes:
    """What pack() was given. Raises zlib.error for bytes pack() did not make."""
    return zlib.decompress(data)


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def alert_from_row(r: tuple[Any, ...]) -> AlertState:
    """An `alerts` row (SELECT *) as state."""
    return AlertState(
        fingerprint=r[0],
        labels=orjson.loads(r[1]),
        annotations=orjson.loads(r[2]),
        status=r[3],
        starts_at=datetime.fromisoformat(r[4]),
        ends_at=_dt(r[5]),
        generator_url=r[6],
        first_seen=datetime.fromisoformat(r[7]),
        last_seen=datetime.fromisoformat(r[8]),
        inhibited_by=r[9],
        receivers=orjson.loads(r[10]),
    )


def alert_json(a: AlertState) -> dict[str, Any]:
    """An alert as GET /api/v1/alerts shows it (Alertmanager's field names, ISO 8601 times)."""
    return {
        "fingerprint": a.fingerprint,
        "labels": a.labels,
        "annotations": a.annotations,
        "status": a.status,
        "startsAt": ts(a.starts_at),
        "endsAt": ts(a.ends_at),
        "generatorURL": a.generator_url,
        "inhibited_by": a.inhibited_by,
        "receivers": a.receivers,
        "first_seen": ts(a.first_seen),
        "last_seen": ts(a.last_seen),
    }


def incident_from_row(r: tuple[Any, ...]) -> IncidentState:
    """An `incidents` row (SELECT *) as state."""
    return IncidentState(
        id=r[0],
        receiver=r[1],
        am_receiver=r[2],
        group_key=r[3],
        status=r[4],
        opened_at=datetime.fromisoformat(r[5]),
        resolved_at=_dt(r[6]),
        alerts=set(orjson.loads(r[7])),
        notified=None if r[8] is None else set(orjson.loads(r[8])),
        last_notified_at=_dt(r[9]),
        group_labels=orjson.loads(r[10]),
        common_labels=orjson.loads(r[11]),
        common_annotations=orjson.loads(r[12]),
        external_url=r[13],
        truncated_alerts=r[14],
        acked_by=r[15],
        acked_at=_dt(r[16]),
        ack_via=r[17],
        ack_comment=r[18],
        silence_id=r[19],
        escalated_at=_dt(r[20]),
        escalated_to=r[21],
    )


def incidents_json(
    incidents: Sequence[Sequence[Any]], notifications: Iterable[Sequence[Any]]
) -> list[dict[str, Any]]:
    """`incidents` rows (SELECT *) as GET /api/v1/incidents shows them, in their order, each
    with its rows of `notifications` (NOTIFICATION_COLUMNS, incident id first) in theirs."""
    by_incident: dict[str, list[dict[str, Any]]] = {}
    for o in notifications:
        by_incident.setdefault(o[0], []).append(notification_json(tuple(o)))
    return [
        incident_json(incident_from_row(tuple(row)), by_incident.get(row[0], []))
        for row in incidents
    ]


ALERT_COLUMNS = [
    "fingerprint",
    "labels",
    "annotations",
    "status",
    "starts_at",
    "ends_at",
    "generator_url",
    "first_seen",
    "last_seen",
    "inhibited_by",
    "receivers",
]
INCIDENT_COLUMNS = [
    "id",
    "receiver",
    "am_receiver",
    "group_key",
    "status",
    "opened_at",
    "resolved_at",
    "alerts",
    "notified",
    "last_notified_at",
    "group_labels",
    "common_labels",
    "common_annotations",
    "external_url",
    "truncated_alerts",
    "acked_by",
    "acked_at",
    "ack_via",
    "ack_comment",
    "silence_id",
    "escalated_at",
    "escalated_to",
]


def alert_values(a: AlertState) -> tuple[Any, ...]:
    """An alert as the values of an `alerts` row, in ALERT_COLUMNS order (both engines)."""
    return (
        a.fingerprint,
        _json(a.labels),
        _json(a.annotations),
        a.status,
        ts(a.starts_at),
        ts(a.ends_at),
        a.generator_url,
        ts(a.first_seen),
        ts(a.last_seen),
        a.inhibited_by,
        _json(a.receivers),
    )


def incident_values(i: IncidentState) -> tuple[Any, ...]:
    """An incident as the values of an `incidents` row, in INCIDENT_COLUMNS order."""
    return (
        i.id,
        i.receiver,
        i.am_receiver,
        i.group_key,
        i.status,
        ts(i.opened_at),
        ts(i.resolved_at),
        _json(sorted(i.alerts)),
        None if i.notified is None else _json(sorted(i.notified)),
        ts(i.last_notified_at),
        _json(i.group_labels),
        _json(i.common_labels),
        _json(i.common_annotations),
        i.external_url,
        i.truncated_alerts,
        i.acked_by,
        ts(i.acked_at),
        i.ack_via,
        i.ack_comment,
        i.silence_id,
        ts(i.escalated_at),
        i.escalated_to,
    )


def outbox_values(o: OutboxItem, view_id: int, now: datetime) -> tuple[Any, ...]:
    """An outbox item queued at `now` as the values of OUTBOX_INSERT's columns."""
    return (
        o.incident_id,
        *o.destination,
        o.view.reason.value,
        view_id,
        o.view.correlation_id,
        ts(now),
        ts(now),
    )


# The columns an outbox row is inserted with (the rest have defaults).
OUTBOX_INSERT = (
    "incident_id, receiver, channel, channel_index, reason, view_id, correlation_id, created_at,"
    " next_attempt_at"
)


def upsert(table: str, columns: list[str], marks: list[str]) -> str:
    """INSERT of a whole row (`marks`: its parameters' placeholders, in `columns` order) that
    updates the row of the same primary key (the first column) in place, in both engines. On
    SQLite, unlike INSERT OR REPLACE (a delete, then an insert under a new rowid), it leaves
    the row where it is and its key's index entry untouched: a commit writes fewer pages."""
    update = ", ".join(f"{c}=EXCLUDED.{c}" for c in columns[1:])
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(marks)})"
        f" ON CONFLICT ({columns[0]}) DO UPDATE SET {update}"
    )


UPSERT_ALERT = upsert("alerts", ALERT_COLUMNS, ["?"] * len(ALERT_COLUMNS))
UPSERT_INCIDENT = upsert("incidents", INCIDENT_COLUMNS, ["?"] * len(INCIDENT_COLUMNS))


def write_plan(db: sqlite3.Connection, plan: Plan, now: datetime) -> list[WrittenView]:
    """Write what `plan` changed (alerts, incidents, outbox rows queued at `now`) in the
    caller's SQLite transaction; the views written, for a ViewCache once it commits."""
    db.executemany(UPSERT_ALERT, [alert_values(a) for a in plan.alerts.values()])
    db.executemany(UPSERT_INCIDENT, [incident_values(i) for i in plan.incidents.values()])
    written: dict[int, WrittenView] = {}  # id(view) -> its row: a view shared by destinations
    for o in plan.outbox:
        if id(o.view) in written:
            row, view, uses = written[id(o.view)]
            written[id(o.view)] = (row, view, uses + 1)
            continue
        packed = pack(o.view.model_dump_json().encode())
        cursor = db.execute("INSERT INTO views (view) VALUES (?)", (packed,))
        written[id(o.view)] = (int(cursor.lastrowid or 0), o.view, 1)
    db.executemany(
        f"INSERT INTO outbox ({OUTBOX_INSERT}) VALUES (?,?,?,?,?,?,?,?,?)",
        [outbox_values(o, written[id(o.view)][0], now) for o in plan.outbox],
    )
    return list(written.values())


# Alerts in the views a ViewCache keeps, in all (a view of none counts as one); what they
# weigh is in the commit that set it (ff69d6a).
VIEW_CACHE_ALERTS = 10_000

# (views row id, the view, how many outbox rows name it)
WrittenView = tuple[int, IncidentView, int]


class ViewCache:
    """The views of outbox rows just committed, kept for the claims that will read them, so
    that a claim does not parse back what the planner built (pydantic's parse of a 10-alert
    view is the larger part of a claim's cost, and it holds the GIL).

    Claims take rows in id order, so the cache keeps the oldest views not claimed yet: once
    the views kept hold `limit` alerts, newer ones are not added (their claims parse them),
    and a claim forgets the views older than the oldest it took (their rows wait for a retry,
    or another replica sent them). A view leaves when each row naming it has taken it. Used
    from the store's one thread (SQLite) or under its lock (PostgreSQL).
    """

    def __init__(self, limit: int = VIEW_CACHE_ALERTS) -> None:
        """Keep views of at most `limit` alerts in all (a view of none counts as one)."""
        self.limit = limit
        self.alerts = 0  # held by the views kept
        self._views: dict[int, tuple[IncidentView, int]] = {}  # row id -> (view, rows left)

    def __len__(self) -> int:
        """How many views are kept."""
        return len(self._views)

    def add(self, written: Iterable[WrittenView]) -> None:
        """Keep views a committed transaction wrote, while there is room."""
        for row, view, uses in written:
            if self.alerts + _alerts(view) > self.limit:
                return
            self._views[row] = (view, uses)
            self.alerts += _alerts(view)

    def take(self, row: int) -> IncidentView | None:
        """The view of views row `row` for one outbox row, if kept (else None: parse it)."""
        kept = self._views.get(row)
        if kept is None:
            return None
        view, uses = kept
        if uses <= 1:
            self._forget(row)
        else:
            self._views[row] = (view, uses - 1)
        return view

    def claimed(self, rows: Sequence[int]) -> dict[int, IncidentView]:
        """The views kept for a claim, given the views row id of each outbox row it claimed
        (one take each): views row id -> view; the others are to be parsed. Then forgets the
        views older than the oldest of `rows` (see the class docstring)."""
        views = {row: view for row in rows if (view := self.take(row)) is not None}
        if rows:
            self.forget_before(min(rows))
        return views

    def forget_before(self, row: int) -> None:
        """Forget the views of rows older than `row` (see the class docstring)."""
        for old in [r for r in self._views if r < row]:
            self._forget(old)

    def _forget(self, row: int) -> None:
        view, _ = self._views.pop(row)
        self.alerts -= _alerts(view)


def _alerts(view: IncidentView) -> int:
    return max(1, len(view.firing) + len(view.resolved))


# The outbox columns notification_json reads, after the incident's id (both engines select them).
NOTIFICATION_COLUMNS = (
    "incident_id, id, channel, channel_index, reason, state, attempts, last_error, created_at,"
    " sent_at"
)


def notification_json(o: tuple[Any, ...]) -> dict[str, Any]:
    """An outbox row (NOTIFICATION_COLUMNS) as an incident's notification in GET
    /api/v1/incidents."""
    keys = NOTIFICATION_COLUMNS.split(", ")[1:]
    return dict(zip(keys, o[1:], strict=True))


def incident_json(i: IncidentState, notifications: list[dict[str, Any]]) -> dict[str, Any]:
    """An incident as GET /api/v1/incidents shows it, with its `notifications`."""
    return {
        "id": i.id,
        "receiver": i.receiver,
        "alertmanager_receiver": i.am_receiver,
        "group_key": i.group_key,
        "status": i.status,
        "opened_at": ts(i.opened_at),
        "resolved_at": ts(i.resolved_at),
        "acked_by": i.acked_by,
        "acked_at": ts(i.acked_at),
        "ack_via": i.ack_via or None,
        "ack_comment": i.ack_comment or None,
        "silence_id": i.silence_id or None,
        "escalated_to": i.escalated_to or None,
        "escalated_at": ts(i.escalated_at),
        "alerts": sorted(i.alerts),
        "group_labels": i.group_labels,
        "notifications": notifications,
    }
