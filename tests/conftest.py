"""Shared fixtures."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from .harness import Client, Fakes, client_factory, start_fakes
from .helpers import require_binary, skip_or_fail
from .postgres import PostgresServer, binaries


@pytest.fixture(scope="session", autouse=True)
def temp_dir_of_the_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """TMPDIR for everything the suite starts, one folder of this run (so that runs beside it
    do not count)."""
    folder = tmp_path_factory.mktemp("tmpdir")
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    try:
        yield folder
    finally:
        if before is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = before
        tempfile.tempdir = None


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_binary("amtool")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server (Debian's postgresql package) for the session; skipped locally
    if it is not installed, a failure under CI=true."""
    bin_dir = binaries()
    if bin_dir is None:
        skip_or_fail("PostgreSQL not found: install Debian's postgresql (make deps)")
    server = PostgresServer(bin_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database of its own for one test."""
    return await postgres_server.new_database()


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
