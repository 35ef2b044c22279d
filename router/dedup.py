"""Whether an incident change is worth a notification, and the named reason why (or why not)."""

from __future__ import annotations

from collections.abc import Set
from datetime import datetime, timedelta

from router.models import Reason


def decide(
    *,
    notified: Set[str] | None,
    active: Set[str],
    remaining: Set[str],
    resolved: Set[str],
    last_notified_at: datetime | None,
    acked: bool = False,
    repeat: timedelta,
    now: datetime,
) -> Reason:
    """Decide for one incident after a change.

    notified: firing alerts in the last notification (None: never notified).
    active: firing alerts now shown (not inhibited); remaining: every alert still firing,
    inhibited ones included; resolved: alerts that stopped firing in this change.
    An acknowledged incident gets no repeat reminders. `repeat` is the receiver's
    repeat_interval; `now` and `last_notified_at` are aware datetimes. The rule follows
    Alertmanager's DedupStage (notify/notify.go needsUpdate): notify when alerts fire that were
    not notified, when notified ones resolved, or when repeat_interval has passed.
    """
    was_notified = bool(notified)
    if not remaining:
        return Reason.RESOLVED if was_notified else Reason.UNCHANGED
    if not active:
        return Reason.INHIBITED
    if not was_notified:
        return Reason.FIRST
    assert notified is not None
    if active - notified:
        return Reason.NEW_ALERTS
    if resolved & notified:
        return Reason.RESOLVED_ALERTS
    if not acked and last_notified_at is not None and now - last_notified_at >= repeat:
        return Reason.REPEAT
    return Reason.UNCHANGED
