"""The store's engines for its contract tests: every test that takes `engine` runs on both."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from router.store import Store
from router.store.postgres import PostgresStore
from router.store.sqlite import SqliteStore

from ..postgres import PostgresServer


@dataclass
class Engine:
    """One engine and one empty place for a store of it (a SQLite file, a PostgreSQL database)."""

    name: str
    where: str  # the file's path or the database's URL

    def store(self) -> Store:
        """A store (not open yet) on this engine's place."""
        if self.name == "sqlite":
            return SqliteStore(self.where)
        return PostgresStore(self.where)

    async def set_schema_version(self, version: int) -> None:
        """Mark the place as of schema `version` (as a newer alert-router would leave it)."""
        if self.name == "sqlite":
            with sqlite3.connect(self.where) as db:
                db.execute(f"PRAGMA user_version={version}")
            return
        conn = await asyncpg.connect(self.where)
        try:
            await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO schema_version VALUES ($1)", version)
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    """Each engine in turn, with a place of its own for this test."""
    if request.param == "sqlite":
        return Engine("sqlite", str(tmp_path / "s.db"))
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return Engine("postgres", await server.new_database())
