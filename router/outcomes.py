"""What became of each recent webhook payload, by correlation id: pending, planned or failed."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from router.state import Plan


class Outcomes:
    """What became of the last payloads, by correlation id, for GET /api/v1/payloads/<id>.

    Bounded: the oldest are forgotten first. The durable record is the store and the log.
    """

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self._by_id: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, correlation_id: str) -> dict[str, Any] | None:
        """The outcome of a payload by correlation id; None if unknown or forgotten."""
        return self._by_id.get(correlation_id)

    def pending(self, correlation_id: str, alerts: int) -> None:
        """A payload was accepted (committed) with this many alerts and waits to be planned."""
        # Planning may have finished before the handler got here: never overwrite its outcome.
        self._by_id.setdefault(
            correlation_id, {"correlation_id": correlation_id, "state": "pending", "alerts": alerts}
        )
        self._trim()

    def planned(self, correlation_id: str, plan: Plan) -> dict[str, Any]:
        """A payload's plan is committed: record and return its outcome (decisions, counts)."""
        outcome = {
            "correlation_id": correlation_id,
            "state": "planned",
            "alerts": len(plan.alerts),
            "incidents": sorted({i.id for i in plan.incidents.values()}),
            "queued": len(plan.outbox),
            "inhibited": plan.inhibited,
            "decisions": plan.decisions(),
        }
        self._by_id[correlation_id] = outcome
        self._trim()
        return outcome

    def failed(self, correlation_id: str, error: str) -> None:
        """A payload could not be planned (it was set aside, with `error`)."""
        self._by_id[correlation_id] = {
            "correlation_id": correlation_id,
            "state": "failed",
            "error": error,
        }
        self._trim()

    def _trim(self) -> None:
        while len(self._by_id) > self.keep:
            self._by_id.popitem(last=False)
