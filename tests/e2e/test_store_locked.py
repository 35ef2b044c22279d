"""Another program holds the store's write lock (sqlite3 shell, a backup tool): webhooks get
503 and /readyz is not ready while it does; once it lets go, both recover and nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from ..helpers import wait_http
from .test_state_faults import HEADERS, Router, post, readyz, until

pytestmark = pytest.mark.slow


async def test_a_store_locked_by_another_program_refuses_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "state" / "state.db"
    router = Router(tmp_path, db)
    router.start()
    try:
        await wait_http(f"{router.base}/readyz", router.proc, timeout_s=30, log=router.log)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            accepted = [(await post(session, router.base, "before"))[1]["correlation_id"]]
            with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as other:
                other.execute("BEGIN EXCLUSIVE")  # held until the rollback below
                status, body = await post(session, router.base, "while-locked")
                assert (status, body["reason"]) == (503, "store"), body
                status, ready = await readyz(session, router.base)
                assert status == 503, ready
                other.execute("ROLLBACK")

            async def ready() -> bool:
                return (await readyz(session, router.base))[0] == 200

            await until(ready, timeout_s=30)
            status, body = await post(session, router.base, "after")
            assert status == 200, body
            accepted.append(body["correlation_id"])
            for cid in accepted:

                async def planned(cid: str = cid) -> bool:
                    url = f"{router.base}/api/v1/payloads/{cid}"
                    async with session.get(url, headers=HEADERS) as resp:
                        return bool((await resp.json()).get("state") == "planned")

                await until(planned, timeout_s=30)
    finally:
        router.stop()


async def test_plans_that_fail_to_commit_mid_burst_are_planned_once_after(tmp_path: Path) -> None:
    """The lock is taken while the planner has a burst to plan: its commits fail (logged,
    retried), the state is loaded again; once the lock goes, every payload answered 200 is
    planned once: one incident and one notification each, none twice."""
    db = tmp_path / "state" / "state.db"
    router = Router(tmp_path, db)
    router.start()
    accepted: list[str] = []
    try:
        await wait_http(f"{router.base}/readyz", router.proc, timeout_s=30, log=router.log)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def burst(first: int) -> None:
                for n in range(first, first + 300, 8):
                    answers = await asyncio.gather(
                        *(post(session, router.base, f"g{n + k}") for k in range(8))
                    )
                    accepted.extend(b["correlation_id"] for s, b in answers if s == 200)

            other = sqlite3.connect(db, isolation_level=None)
            try:
                for attempt in range(5):  # until the lock lands with payloads left to plan
                    await burst(attempt * 1000)
                    other.execute("BEGIN EXCLUSIVE")
                    (watermark,) = other.execute("SELECT watermark FROM planner").fetchone()
                    (waiting,) = other.execute(
                        "SELECT count(*) FROM inbox WHERE id>?", (watermark,)
                    ).fetchone()
                    if waiting:
                        break
                    other.execute("ROLLBACK")
                else:
                    pytest.skip("the planner kept up with every burst: nothing to fail")

                async def commit_failed() -> bool:
                    return bool(router.events("webhook_plan_failed"))

                # Each job on the store's one writer thread (delivery's claims and marks, then
                # the planner's commit) waits out SQLite's busy timeout in turn: bounded, long.
                await until(commit_failed, timeout_s=120)
                other.execute("ROLLBACK")
            finally:
                other.close()

            async def all_planned() -> bool:
                with contextlib.closing(sqlite3.connect(db)) as conn:
                    (left,) = conn.execute("SELECT count(*) FROM inbox").fetchone()
                return bool(left == 0)

            await until(all_planned, timeout_s=60)
    finally:
        router.stop()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = dict(
            conn.execute("SELECT correlation_id, count(*) FROM outbox GROUP BY correlation_id")
        )
        (incidents,) = conn.execute("SELECT count(*) FROM incidents").fetchone()
    assert rows == {cid: 1 for cid in accepted}, "each payload: one notification, once"
    assert incidents == len(accepted)
