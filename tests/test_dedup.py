"""dedup.decide as a table: one change to an incident -> the named reason (notify/notify.go's DedupStage)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from router.dedup import decide
from router.models import Reason

T0 = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
REPEAT = timedelta(hours=4)


@pytest.mark.parametrize(
    ("notified", "active", "remaining", "resolved", "last", "acked", "now", "reason"),
    [
        # never notified
        (None, {"a"}, {"a"}, set(), None, False, T0, Reason.FIRST),
        (None, set(), {"a"}, set(), None, False, T0, Reason.INHIBITED),  # all inhibited
        (None, set(), set(), {"a"}, None, False, T0, Reason.UNCHANGED),  # resolved unseen
        (set(), {"a"}, {"a"}, set(), T0, False, T0, Reason.FIRST),  # notified nothing firing
        # notified before
        ({"a"}, {"a"}, {"a"}, set(), T0, False, T0 + timedelta(minutes=5), Reason.UNCHANGED),
        ({"a"}, {"a", "b"}, {"a", "b"}, set(), T0, False, T0, Reason.NEW_ALERTS),
        ({"a", "b"}, {"a"}, {"a"}, {"b"}, T0, False, T0, Reason.RESOLVED_ALERTS),
        ({"a"}, set(), set(), {"a"}, T0, False, T0, Reason.RESOLVED),
        ({"a"}, set(), {"a"}, set(), T0, False, T0, Reason.INHIBITED),  # now inhibited
        # a resolve of an alert that was never shown is no news
        ({"a"}, {"a"}, {"a"}, {"b"}, T0, False, T0, Reason.UNCHANGED),
        # new alerts win over resolved ones in the same change
        ({"a", "b"}, {"a", "c"}, {"a", "c"}, {"b"}, T0, False, T0, Reason.NEW_ALERTS),
        # repeat_interval: exactly at it, and not when acknowledged
        ({"a"}, {"a"}, {"a"}, set(), T0, False, T0 + REPEAT, Reason.REPEAT),
        (
            {"a"},
            {"a"},
            {"a"},
            set(),
            T0,
            False,
            T0 + REPEAT - timedelta(seconds=1),
            Reason.UNCHANGED,
        ),
        ({"a"}, {"a"}, {"a"}, set(), T0, True, T0 + REPEAT * 2, Reason.UNCHANGED),
        # fewer shown than notified (one inhibited since): nothing to say
        ({"a", "b"}, {"a"}, {"a", "b"}, set(), T0, False, T0, Reason.UNCHANGED),
    ],
)
def test_decide(
    notified: set[str] | None,
    active: set[str],
    remaining: set[str],
    resolved: set[str],
    last: datetime | None,
    acked: bool,
    now: datetime,
    reason: Reason,
) -> None:
    got = decide(
        notified=notified,
        active=active,
        remaining=remaining,
        resolved=resolved,
        last_notified_at=last,
        acked=acked,
        repeat=REPEAT,
        now=now,
    )
    assert got is reason


@pytest.mark.parametrize("reason", list(Reason))
def test_which_reasons_notify(reason: Reason) -> None:
    queues = {"first", "new_alerts", "resolved_alerts", "resolved", "repeat", "uninhibited"}
    assert reason.notifies is (reason.value in queues)  # as the README lists them
