"""State's indexes and Plan's summaries: open/close keep by_group in step; decisions per receiver."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.models import Reason
from router.state import Destination, IncidentState, Plan, State

T0 = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


def incident(id_: str, receiver: str, group: str, *alerts: str) -> IncidentState:
    return IncidentState(id_, receiver, "am", group, T0, alerts=set(alerts))


def test_open_and_close_keep_the_group_index_in_step() -> None:
    state = State()
    a, b, c = (
        incident("1", "slack", "g", "x"),
        incident("2", "pager", "g", "x"),
        incident("3", "slack", "h", "y"),
    )
    for i in (a, b, c):
        state.open(i)
    assert state.by_group == {("am", "g"): {"slack", "pager"}, ("am", "h"): {"slack"}}
    assert state.open_incident("3") is c and state.open_incident("4") is None
    state.close(a)
    state.close(c)
    state.close(c)  # closing twice is harmless
    assert state.by_group == {("am", "g"): {"pager"}}
    assert list(state.incidents) == [("pager", "am", "g")]


@pytest.mark.parametrize(
    ("reasons", "decisions"),
    [
        ({}, {}),
        (
            {("b", Reason.FIRST): 1, ("a", Reason.UNCHANGED): 2},
            {"a": ["unchanged", "unchanged"], "b": ["first"]},
        ),
        (
            {("a", Reason.RESOLVED): 0, ("a", Reason.SEND_RESOLVED_OFF): 1},
            {"a": ["send_resolved_off"]},
        ),
    ],
)
def test_plan_decisions(
    reasons: dict[tuple[str, Reason], int], decisions: dict[str, list[str]]
) -> None:
    plan = Plan()
    plan.reasons.update(reasons)
    assert plan.decisions() == decisions


def test_plan_merge_adds_rows_and_counts() -> None:
    first, second = Plan(), Plan()
    first.reasons[("a", Reason.FIRST)] += 1
    second.reasons[("a", Reason.FIRST)] += 1
    second.incidents["1"] = incident("1", "a", "g")
    dest = Destination("a", "slack", 0)
    assert str(dest) == "a/slack[0]"
    first.merge(second)
    assert first.reasons == {("a", Reason.FIRST): 2} and list(first.incidents) == ["1"]
    assert first.outbox == [] and isinstance(dest, tuple)
