"""Inhibition rules as tables: which firing source inhibits which labels (inhibit/inhibit_test.go)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from router.inhibit import Inhibitor, InhibitRule
from router.matchers import parse_matchers

T0 = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


def rule(sources: str, targets: str, *equal: str) -> InhibitRule:
    return InhibitRule(tuple(parse_matchers(sources)), tuple(parse_matchers(targets)), equal)


SERVICE_DOWN = rule('alertname="ServiceDown"', 'alertname=~"HighLatency|HighErrorRate"', "service")
CRITICAL = rule('severity="critical"', 'severity="warning"', "alertname", "cluster")
TWO_SIDED = rule('severity="critical"', 'team="x"')


def inhibitor(*rules: InhibitRule) -> Inhibitor:
    return Inhibitor(rules, timedelta(hours=1))


@pytest.mark.parametrize(
    ("rules", "firing", "target", "by"),
    [
        # equal labels equal: inhibited, by the source's fingerprint
        (
            [SERVICE_DOWN],
            {"s": {"alertname": "ServiceDown", "service": "api"}},
            {"alertname": "HighLatency", "service": "api"},
            "s",
        ),
        # equal labels differ: not inhibited
        (
            [SERVICE_DOWN],
            {"s": {"alertname": "ServiceDown", "service": "api"}},
            {"alertname": "HighLatency", "service": "web"},
            None,
        ),
        # a label of `equal` missing on both sides is equal ("" == "")
        (
            [SERVICE_DOWN],
            {"s": {"alertname": "ServiceDown"}},
            {"alertname": "HighErrorRate"},
            "s",
        ),
        # missing on one side only: not equal
        (
            [SERVICE_DOWN],
            {"s": {"alertname": "ServiceDown"}},
            {"alertname": "HighErrorRate", "service": "api"},
            None,
        ),
        # the target matchers do not match: not inhibited
        (
            [SERVICE_DOWN],
            {"s": {"alertname": "ServiceDown", "service": "api"}},
            {"alertname": "DiskFull", "service": "api"},
            None,
        ),
        # several equal labels: all must be equal
        (
            [CRITICAL],
            {"s": {"alertname": "A", "cluster": "eu", "severity": "critical"}},
            {"alertname": "A", "cluster": "us", "severity": "warning"},
            None,
        ),
        (
            [CRITICAL],
            {"s": {"alertname": "A", "cluster": "eu", "severity": "critical"}},
            {"alertname": "A", "cluster": "eu", "severity": "warning"},
            "s",
        ),
        # the second rule applies when the first does not
        (
            [SERVICE_DOWN, CRITICAL],
            {"s": {"alertname": "A", "severity": "critical"}},
            {"alertname": "A", "severity": "warning"},
            "s",
        ),
        # both sides vs both sides: neither inhibits the other (Alertmanager's rule)
        (
            [TWO_SIDED],
            {"s": {"severity": "critical", "team": "x", "i": "1"}},
            {"severity": "critical", "team": "x", "i": "2"},
            None,
        ),
        # a source-only alert inhibits a two-sided one
        (
            [TWO_SIDED],
            {"s": {"severity": "critical", "team": "y"}},
            {"severity": "critical", "team": "x"},
            "s",
        ),
        # a two-sided alert inhibits a target-only one
        (
            [TWO_SIDED],
            {"s": {"severity": "critical", "team": "x"}},
            {"severity": "warning", "team": "x"},
            "s",
        ),
        # no alert inhibits itself (the target is judged under the source's fingerprint)
        (
            [TWO_SIDED],
            {"t": {"severity": "critical", "team": "x"}},
            {"severity": "critical", "team": "x"},
            None,
        ),
    ],
)
def test_inhibited_by(
    rules: list[InhibitRule],
    firing: dict[str, dict[str, str]],
    target: dict[str, str],
    by: str | None,
) -> None:
    inh = inhibitor(*rules)
    for fp, labels in firing.items():
        inh.observe(fp, labels, True, T0)
    assert inh.inhibited_by("t", target, T0) == by


@pytest.mark.parametrize(
    ("seen", "now", "by"),
    [
        (T0, T0 + timedelta(minutes=59), "s"),
        (T0, T0 + timedelta(hours=1), "s"),  # exactly stale_after: still fresh
        (T0, T0 + timedelta(hours=1, seconds=1), None),  # stale: stops inhibiting
    ],
)
def test_a_stale_source_stops_inhibiting(seen: datetime, now: datetime, by: str | None) -> None:
    inh = inhibitor(SERVICE_DOWN)
    inh.observe("s", {"alertname": "ServiceDown"}, True, seen)
    assert inh.inhibited_by("t", {"alertname": "HighLatency"}, now) == by


def test_a_resolved_source_stops_inhibiting() -> None:
    inh = inhibitor(SERVICE_DOWN)
    inh.observe("s", {"alertname": "ServiceDown"}, True, T0)
    inh.observe("s", {"alertname": "ServiceDown"}, False, T0)
    assert inh.inhibited_by("t", {"alertname": "HighLatency"}, T0) is None


DOWN = {"alertname": "ServiceDown", "service": "api"}
LATENCY = {"alertname": "HighLatency", "service": "api"}
OTHER = {"alertname": "HighLatency", "service": "web"}


@pytest.mark.parametrize(
    ("events", "affected"),
    [
        # targets alone: nothing to judge again
        ([("t1", LATENCY, True, T0), ("t2", OTHER, True, T0)], []),
        # a new source: the targets of its key, not those of another key
        ([("t1", LATENCY, True, T0), ("t2", OTHER, True, T0), ("s", DOWN, True, T0)], ["t1"]),
        # a source seen again while fresh changes nothing
        (
            [
                ("t1", LATENCY, True, T0),
                ("s", DOWN, True, T0),
                ("take", {}, True, T0),
                ("s", DOWN, True, T0 + timedelta(minutes=5)),
            ],
            [],
        ),
        # a source back after going stale inhibits again
        (
            [
                ("t1", LATENCY, True, T0),
                ("s", DOWN, True, T0),
                ("take", {}, True, T0),
                ("s", DOWN, True, T0 + timedelta(hours=2)),
            ],
            ["t1"],
        ),
        # a source that resolves: its targets may be released
        (
            [
                ("t1", LATENCY, True, T0),
                ("s", DOWN, True, T0),
                ("take", {}, True, T0),
                ("s", DOWN, False, T0),
            ],
            ["t1"],
        ),
        # a resolved target is no longer listed
        ([("t1", LATENCY, True, T0), ("t1", LATENCY, False, T0), ("s", DOWN, True, T0)], []),
        # a resolve of an alert never seen changes nothing
        ([("t1", LATENCY, True, T0), ("s", DOWN, False, T0)], []),
    ],
)
def test_take_affected_lists_the_targets_of_sources_that_came_or_went(
    events: list[tuple[str, dict[str, str], bool, datetime]], affected: list[str]
) -> None:
    inh = inhibitor(SERVICE_DOWN)
    for fp, labels, firing, seen in events:
        if fp == "take":
            inh.take_affected()
        else:
            inh.observe(fp, labels, firing, seen)
    assert inh.take_affected() == affected
    assert inh.take_affected() == []  # taken once
