"""Shared config field types: durations as Alertmanager writes them, read as timedelta."""

from __future__ import annotations

from datetime import timedelta

import pytest

from router.config import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("1d", 86400),
        ("1w", 604800),
        ("0", 0),
        ("250ms", 0.25),
    ],
)
def test_durations_as_alertmanager_writes_them(text: str, expected: float) -> None:
    assert parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["", "5", "1m1h", "-5m", "5 m", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
