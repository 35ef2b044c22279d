"""router/models.py: the Alertmanager v4 wire shape (what it accepts and refuses) and the views'
derived fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from router.models import MAX_COUNT, ZERO_TIME, Reason, WebhookPayload, WireAlert

from .helpers import fixture_body, fixture_json
from .incidents import alert, incident


def test_a_captured_payload_parses_with_aware_times_and_zero_ends() -> None:
    payload = WebhookPayload.model_validate_json(fixture_body("firing-group-3-alerts"))
    assert payload.version == "4" and payload.status == "firing"
    assert len(payload.alerts) == 3 and payload.truncatedAlerts == 0
    first = payload.alerts[0]
    assert first.startsAt.tzinfo is not None
    assert first.endsAt == ZERO_TIME == datetime(1, 1, 1, tzinfo=UTC)
    assert len(first.fingerprint) == 16


def payload(**changes: Any) -> dict[str, Any]:
    """A valid payload dict (the captured firing group) with `changes` applied."""
    data = fixture_json("firing-group-3-alerts")
    data.update(changes)
    return data


def a(**changes: Any) -> dict[str, Any]:
    """A valid alert dict with `changes` applied."""
    data: dict[str, Any] = {
        "status": "firing",
        "labels": {"alertname": "X"},
        "startsAt": "2026-11-23T07:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "0123456789abcdef",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"version": "3"}, ("version",)),
        ({"version": 4}, ("version",)),
        ({"status": "pending"}, ("status",)),
        ({"groupKey": ""}, ("groupKey",)),
        ({"alerts": None}, ("alerts",)),
        ({"truncatedAlerts": -1}, ("truncatedAlerts",)),
        ({"truncatedAlerts": MAX_COUNT + 1}, ("truncatedAlerts",)),
        ({"alerts": [a(labels={})]}, ("alerts", 0, "labels")),
        ({"alerts": [a(labels={"a": 1})]}, ("alerts", 0, "labels", "a")),
        ({"alerts": [a(fingerprint="")]}, ("alerts", 0, "fingerprint")),
        ({"alerts": [a(fingerprint="f" * 65)]}, ("alerts", 0, "fingerprint")),
        ({"alerts": [a(startsAt="yesterday")]}, ("alerts", 0, "startsAt")),
        ({"alerts": [a(endsAt=None)]}, ("alerts", 0, "endsAt")),
        ({"alerts": [a(status="firing"), a(status="silenced")]}, ("alerts", 1, "status")),
    ],
)
def test_what_is_not_a_v4_payload_is_refused_at_its_field(
    changes: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    data = payload(**changes)
    if changes.get("alerts", 0) is None:
        del data["alerts"]
    with pytest.raises(ValidationError) as refused:
        WebhookPayload.model_validate(data)
    assert [e["loc"] for e in refused.value.errors()] == [loc]


def test_what_alertmanager_may_leave_out_or_add() -> None:
    parsed = WebhookPayload.model_validate(
        {
            "version": "4",
            "receiver": "r",
            "status": "resolved",
            "alerts": [a(status="resolved", fingerprint="f" * 64, extra=1)],
            "groupKey": "{}:{}",
            "truncatedAlerts": MAX_COUNT,
            "future": {"field": True},  # fields Alertmanager may add later are ignored
        }
    )
    assert parsed.groupLabels == parsed.commonLabels == parsed.commonAnnotations == {}
    assert parsed.externalURL == "" and parsed.truncatedAlerts == MAX_COUNT
    assert parsed.alerts[0].annotations == {} and parsed.alerts[0].generatorURL == ""
    assert not hasattr(parsed, "future")


def test_wire_models_are_frozen() -> None:
    wire = WireAlert.model_validate(a())
    with pytest.raises(ValidationError, match="frozen"):
        wire.status = "resolved"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("reason", "notifies"),
    [
        (Reason.FIRST, True),
        (Reason.NEW_ALERTS, True),
        (Reason.RESOLVED_ALERTS, True),
        (Reason.RESOLVED, True),
        (Reason.REPEAT, True),
        (Reason.UNINHIBITED, True),
        (Reason.UNCHANGED, False),
        (Reason.SEND_RESOLVED_OFF, False),
        (Reason.INHIBITED, False),
        (Reason.ACKED, False),
        (Reason.UNACKED, False),
        (Reason.ESCALATED, False),
        (Reason.RECEIVER_REMOVED, False),
    ],
)
def test_which_reasons_queue_a_notification(reason: Reason, notifies: bool) -> None:
    assert reason.notifies is notifies


def test_every_reason_is_in_the_table_and_reads_as_its_value() -> None:
    assert len(Reason) == 13
    assert f"{Reason.NEW_ALERTS}" == "new_alerts" and Reason("receiver_removed").notifies is False


@pytest.mark.parametrize(
    ("alerts", "common", "severity"),
    [
        ([alert({"alertname": "A", "severity": "warning"})], {}, "warning"),
        (  # firing first, even when a resolved alert comes first in the payload
            [
                alert({"alertname": "A", "severity": "info"}, status="resolved"),
                alert({"alertname": "A", "severity": "critical"}, n=1),
            ],
            {},
            "critical",
        ),
        ([alert({"alertname": "A"}), alert({"severity": "page"}, n=1)], {}, "page"),
        ([alert({"alertname": "A"})], {"severity": "common"}, "common"),
        ([alert({"alertname": "A"})], {}, ""),
    ],
)
def test_severity(alerts: list[Any], common: dict[str, str], severity: str) -> None:
    view = incident(*alerts).model_copy(update={"common_labels": common})
    assert view.severity == severity


@pytest.mark.parametrize(
    ("common", "group", "names", "title"),
    [
        ({"alertname": "DiskFull"}, {"alertname": "Other"}, ["X"], "DiskFull"),
        ({}, {"alertname": "FromGroup"}, ["X"], "FromGroup"),
        ({}, {}, ["B", "A", "B"], "A, B"),  # each name once, sorted
        ({}, {}, [""], "alerts"),
    ],
)
def test_title(common: dict[str, str], group: dict[str, str], names: list[str], title: str) -> None:
    alerts = [alert({"alertname": n} if n else {"job": "x"}, n=i) for i, n in enumerate(names)]
    view = incident(*alerts).model_copy(update={"common_labels": common, "group_labels": group})
    assert view.title == title
