"""Paths and small helpers shared by the tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
FIXTURES = DATA / "alertmanager"


def require_binary(name: str) -> str:
    """The path of a Debian-packaged binary; skip locally if missing, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} not found: install Debian's prometheus-alertmanager "
            "(make deps, or apt-get install prometheus-alertmanager)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def fixture_body(name: str) -> bytes:
    """The exact bytes Alertmanager 0.25 sent for a captured payload."""
    return (FIXTURES / "raw" / f"{name}.body").read_bytes()


def fixture_json(name: str) -> dict[str, object]:
    data: dict[str, object] = orjson.loads((FIXTURES / f"{name}.json").read_bytes())
    return data
