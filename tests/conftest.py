"""Shared fixtures: paths, the shipped config, and the Alertmanager binaries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
FIXTURES = DATA / "alertmanager"


def require_binary(name: str) -> str:
    """The path of a Debian-packaged binary; skip locally if missing, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: install Debian's prometheus-alertmanager (apt-get install prometheus-alertmanager)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_binary("amtool")
