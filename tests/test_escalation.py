"""Escalation rules as a table: which incidents are due, and which receivers an incident tells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from router.config import ReceiverConfig, parse_config
from router.errors import ConfigError
from router.escalation import escalation_due, escalations_due, recipients
from router.state import IncidentState

T0 = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)

CONFIG = """
receivers:
  - name: team
    slack_configs: [{bot_token: xoxb-1, channel: "#team"}]
    escalate: {after: 10m, to: pager}
  - name: quiet
    slack_configs: [{bot_token: xoxb-1, channel: "#quiet"}]
  - name: pager
    pagerduty_configs: [{routing_key: k}]
route: {receiver: team}
"""
RECEIVERS: dict[str, ReceiverConfig] = {r.name: r for r in parse_config(CONFIG).receivers}


def incident(receiver: str = "team", **fields: Any) -> IncidentState:
    base: dict[str, Any] = {"alerts": {"a"}, "notified": {"a"}}
    return IncidentState("i1", receiver, "am", "{}:{}", T0, **(base | fields))


@pytest.mark.parametrize(
    ("fields", "after", "due"),
    [
        ({}, timedelta(minutes=10), True),  # exactly escalate.after: due
        ({}, timedelta(minutes=9, seconds=59), False),
        ({"acked_by": "alice"}, timedelta(hours=1), False),
        ({"escalated_at": T0 + timedelta(minutes=10)}, timedelta(hours=1), False),  # once
        ({"notified": None}, timedelta(hours=1), False),  # never notified (all inhibited)
        ({"notified": set()}, timedelta(hours=1), False),
        ({"status": "resolved"}, timedelta(hours=1), False),
    ],
)
def test_escalation_due(fields: dict[str, Any], after: timedelta, due: bool) -> None:
    rule = RECEIVERS["team"].escalate
    assert escalation_due(incident(**fields), rule, T0 + after) is due


def test_no_rule_never_escalates() -> None:
    assert escalation_due(incident("quiet"), None, T0 + timedelta(days=1)) is False


def test_escalations_due_pairs_each_due_incident_with_its_receivers_rule() -> None:
    due, early, quiet, gone = (
        incident(),
        IncidentState("i2", "team", "am", "g2", T0 + timedelta(minutes=5), notified={"b"}),
        incident("quiet"),
        incident("removed-by-reload"),
    )
    found = escalations_due([due, early, quiet, gone], RECEIVERS, T0 + timedelta(minutes=12))
    assert [(i.id, rule.to) for i, rule in found] == [("i1", "pager")]


@pytest.mark.parametrize(
    ("receiver", "escalated_to", "told"),
    [
        ("team", "", ["team"]),
        ("team", "pager", ["team", "pager"]),  # the page follows the incident once escalated
        ("team", "removed-by-reload", ["team"]),
        ("removed-by-reload", "pager", ["pager"]),
    ],
)
def test_recipients(receiver: str, escalated_to: str, told: list[str]) -> None:
    found = recipients(incident(receiver, escalated_to=escalated_to), RECEIVERS)
    assert [r.name for r in found] == told


def test_escalation_config_errors() -> None:
    bad = CONFIG.replace("to: pager", "to: nobody")
    with pytest.raises(
        ConfigError, match=r"receivers\[0\]\.escalate\.to: undefined receiver 'nobody'"
    ):
        parse_config(bad)
