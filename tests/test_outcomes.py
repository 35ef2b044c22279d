"""router/outcomes.py: what GET /api/v1/payloads/<id> answers, and how many are kept."""

from __future__ import annotations

from datetime import UTC, datetime

from router.config import parse_config
from router.intake import parse_payload
from router.outcomes import Outcomes
from router.pipeline import Pipeline
from router.state import Plan, State

from .helpers import fixture_body

CONFIG = parse_config(
    "receivers: [{name: r, slack_configs: [{bot_token: x, channel: c}]}]\nroute: {receiver: r}\n"
)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def plan_of(fixture: str) -> Plan:
    """The plan of a captured Alertmanager payload on an empty state."""
    payload = parse_payload("application/json", fixture_body(fixture))
    return Pipeline(CONFIG, lambda: "k3v9x").ingest(payload, State(), T0, "c")


def test_unknown_is_none() -> None:
    assert Outcomes().get("nope") is None


def test_pending_then_planned() -> None:
    outcomes = Outcomes()
    outcomes.pending("c1", 3)
    assert outcomes.get("c1") == {"correlation_id": "c1", "state": "pending", "alerts": 3}
    plan = plan_of("firing-group-3-alerts")
    returned = outcomes.planned("c1", plan)
    assert (
        returned
        == outcomes.get("c1")
        == {
            "correlation_id": "c1",
            "state": "planned",
            "alerts": 3,
            "incidents": ["k3v9x"],
            "queued": 1,
            "inhibited": 0,
            "decisions": {"r": ["first"]},
        }
    )


def test_pending_never_overwrites_an_outcome_planning_recorded_first() -> None:
    outcomes = Outcomes()
    outcomes.planned("c1", plan_of("firing-group-3-alerts"))
    outcomes.pending("c1", 3)  # the handler got there after the planner
    assert outcomes.get("c1")["state"] == "planned"  # type: ignore[index]
    outcomes.failed("c2", "alerts: field required")
    outcomes.pending("c2", 0)
    assert outcomes.get("c2") == {
        "correlation_id": "c2",
        "state": "failed",
        "error": "alerts: field required",
    }


def test_failed_replaces_pending() -> None:
    outcomes = Outcomes()
    outcomes.pending("c1", 1)
    outcomes.failed("c1", "boom")
    assert outcomes.get("c1") == {"correlation_id": "c1", "state": "failed", "error": "boom"}


def test_the_oldest_are_forgotten_first() -> None:
    outcomes = Outcomes(keep=3)
    for n in range(3):
        outcomes.pending(f"c{n}", n)
    outcomes.failed("c0", "x")  # an update does not make it younger: c0 stays the oldest
    outcomes.pending("c3", 3)
    assert [outcomes.get(f"c{n}") is not None for n in range(4)] == [False, True, True, True]
    outcomes.planned("c4", plan_of("resolved-group"))
    outcomes.failed("c5", "y")
    assert [c for c in ("c1", "c2", "c3", "c4", "c5") if outcomes.get(c)] == ["c3", "c4", "c5"]
