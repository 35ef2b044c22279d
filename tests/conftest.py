"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from .harness import Client, Fakes, client_factory, start_fakes
from .helpers import require_binary


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_binary("amtool")


@pytest.fixture
async def fakes(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Fakes]:
    """Fake Telegram, Slack and PagerDuty servers and a real SMTP server, on loopback."""
    async for running in start_fakes(aiohttp_server):
        yield running


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> Callable[..., Awaitable[Client]]:
    """make_client(fakes, receivers, extra): the app, with its store in tmp_path."""
    return client_factory(aiohttp_client, tmp_path)
