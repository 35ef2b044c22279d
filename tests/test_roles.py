"""Which replica plans: Role's changes, and renew_once() setting it from the planner lease."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import pytest

from router.roles import LEASE_TTL, Role, renew_once
from router.store.postgres import PostgresStore
from router.store.sqlite import SqliteStore


@pytest.mark.parametrize(
    ("steps", "name", "epoch", "changes"),
    [
        ([], "standby", 0, []),
        ([("take", 1)], "planner", 1, ["taken"]),
        ([("take", 1), ("take", 1)], "planner", 1, ["taken"]),  # a renewal is no change
        ([("take", 1), ("take", 3)], "planner", 3, ["taken", "lost", "taken"]),  # held between
        ([("take", 2), ("lose", 0)], "standby", 0, ["taken", "lost"]),
        ([("lose", 0)], "standby", 0, []),
    ],
)
def test_role_changes(
    steps: list[tuple[str, int]], name: str, epoch: int, changes: list[str]
) -> None:
    told: list[str] = []
    role = Role(on_change=lambda _role, change: told.append(change))
    for step, arg in steps:
        role.take(arg) if step == "take" else role.lose()
    assert (role.name, role.epoch, role.is_planner) == (name, epoch, epoch > 0)
    assert told == changes
    assert (role.takeovers, role.losses) == (changes.count("taken"), changes.count("lost"))


async def test_wait_for_returns_at_the_change() -> None:
    role = Role()
    await asyncio.wait_for(role.wait_for(planner=False), 1)  # already a standby
    waiting = asyncio.create_task(role.wait_for(planner=True))
    await asyncio.sleep(0)
    assert not waiting.done()
    role.take(1)
    await asyncio.wait_for(waiting, 5)
    changed = asyncio.create_task(role.changed())
    await asyncio.sleep(0)
    role.lose()
    await asyncio.wait_for(changed, 5)


async def test_on_sqlite_the_one_router_is_always_the_planner(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    role = Role()
    held_since = await renew_once(store, role, None)
    assert role.epoch == 1 and held_since is not None
    assert await renew_once(store, role, held_since) is not None and role.takeovers == 1
    await store.aclose()


async def test_a_standby_stays_one_while_another_replica_holds_the_lease(
    postgres_url: str,
) -> None:
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    await first.open()
    await second.open()
    try:
        planner, standby = Role(), Role()
        assert await renew_once(first, planner, None) is not None and planner.is_planner
        assert await renew_once(second, standby, None) is None and not standby.is_planner
        standby.take(99)  # as if it held an older lease: the database says another holds it
        assert await renew_once(second, standby, None) is None and not standby.is_planner
        assert planner.is_planner and planner.losses == 0
    finally:
        await first.aclose()
        await second.aclose()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_renewal_that_fails_keeps_the_role_until_the_lease_ran_out() -> None:
    unreachable = PostgresStore(f"postgresql://postgres@127.0.0.1:{_closed_port()}/none")
    role = Role()
    role.take(4)
    recent = time.monotonic()
    assert await renew_once(unreachable, role, recent) == recent and role.epoch == 4
    expired = time.monotonic() - LEASE_TTL.total_seconds()
    assert await renew_once(unreachable, role, expired) == expired and not role.is_planner


def test_taking_the_lease_is_info_losing_it_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """`make run` on SQLite takes the lease at every start: routine, not a warning (a takeover
    on PostgreSQL is warned by the planner's planning_started). Losing it is a warning."""
    caplog.set_level(logging.INFO, logger="router.roles")
    role = Role()
    role.take(1)
    role.lose()
    role.take(2)
    changes = [
        (r.levelno, r.getMessage()) for r in caplog.records if "role_changed" in r.getMessage()
    ]
    assert [level for level, _ in changes] == [logging.INFO, logging.WARNING, logging.INFO]
    assert (role.name, role.epoch, role.takeovers, role.losses) == ("planner", 2, 2, 1)
