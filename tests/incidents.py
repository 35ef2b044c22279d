"""IncidentView builders for render and channel tests: an incident from a few alert dicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from router.models import AlertView, IncidentView, Reason

NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


def alert(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    *,
    status: str = "firing",
    n: int = 0,
    **links: str,
) -> AlertView:
    """One alert; `labels` defaults to DiskFull/critical; links: runbook_url, dashboard_url..."""
    return AlertView(
        fingerprint=f"{n:016x}",
        status=status,  # type: ignore[arg-type]
        labels=labels if labels is not None else {"alertname": "DiskFull", "severity": "critical"},
        annotations=annotations or {},
        starts_at=NOW - timedelta(minutes=5),
        ends_at=NOW if status == "resolved" else None,
        generator_url=links.pop("generator_url", ""),
        **links,
    )


def incident(
    *alerts: AlertView, id: str = "k2x7m", reason: Reason = Reason.FIRST, **extra: Any
) -> IncidentView:
    """An incident of these alerts (firing and resolved sorted by their status)."""
    firing = [a for a in alerts if a.status == "firing"]
    resolved = [a for a in alerts if a.status == "resolved"]
    labels = [a.labels for a in alerts]
    common = {k: v for k, v in labels[0].items() if all(x.get(k) == v for x in labels)}
    return IncidentView(
        id=id,
        receiver=extra.pop("receiver", "oncall"),
        status="firing" if firing else "resolved",
        reason=reason,
        group_key="{}:{}",
        group_labels=extra.pop("group_labels", {"alertname": common.get("alertname", "")}),
        common_labels=common,
        common_annotations={},
        external_url="http://alertmanager.example:9093",
        firing=firing,
        resolved=resolved,
        opened_at=NOW - timedelta(minutes=5),
        notified_at=NOW,
        **extra,
    )
