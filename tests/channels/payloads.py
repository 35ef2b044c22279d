"""Alertmanager payloads with chosen labels and annotations, for the channel tests."""

from __future__ import annotations

from typing import Any

import orjson

from ..helpers import fixture_body


def group_payload(
    alerts: list[tuple[dict[str, str], dict[str, str]]], group_labels: dict[str, str]
) -> bytes:
    """One firing group: each alert is (labels, annotations) over the fixture's first alert."""
    data: dict[str, Any] = orjson.loads(fixture_body("firing-group-3-alerts"))
    template = data["alerts"][0]
    data["alerts"] = []
    for i, (labels, notes) in enumerate(alerts):
        alert = orjson.loads(orjson.dumps(template))
        alert["labels"].update(labels)
        alert["annotations"].update(notes)
        alert["fingerprint"] = f"{i:016x}"
        data["alerts"].append(alert)
    data["groupLabels"] = group_labels
    data["commonLabels"] = {**group_labels}
    data["groupKey"] = "{}:" + orjson.dumps(group_labels).decode()
    return orjson.dumps(data)
