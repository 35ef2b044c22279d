"""Shared fixtures."""

from __future__ import annotations

import pytest

from .helpers import require_binary


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_binary("amtool")
