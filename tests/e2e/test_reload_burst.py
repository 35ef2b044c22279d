"""SIGHUP while the planner works through a burst: the reloads wait for a slice to end, and
every payload is planned once on the state the previous one committed (no notification twice)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from ..helpers import wait_http
from .test_state_faults import Router, post, until

pytestmark = pytest.mark.slow
GROUPS = 150
RELOADS = 3


async def test_sighup_while_planning_a_burst_plans_each_payload_once(tmp_path: Path) -> None:
    db = tmp_path / "state" / "state.db"
    router = Router(tmp_path, db)
    proc = router.start()
    try:
        await wait_http(f"{router.base}/readyz", proc, timeout_s=30, log=router.log)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def burst() -> None:
                for n in range(0, GROUPS, 10):
                    answers = await asyncio.gather(
                        *(post(session, router.base, f"g{n + k}") for k in range(10))
                    )
                    assert {status for status, _ in answers} == {200}, answers

            async def inbox_empty() -> bool:
                with contextlib.closing(sqlite3.connect(db)) as conn:
                    (left,) = conn.execute("SELECT count(*) FROM inbox").fetchone()
                return bool(left == 0)

            await burst()  # the first of each group: one incident, one notification
            await until(inbox_empty, timeout_s=60)
            # The same alerts again (Alertmanager's group_interval), SIGHUP while they are
            # planned: nothing changed, so nothing is sent again.
            sender = asyncio.create_task(burst())
            for n in range(RELOADS):
                proc.send_signal(signal.SIGHUP)

                async def reloaded(n: int = n) -> bool:
                    return len(router.events("config_reloaded")) > n

                await until(reloaded, timeout_s=30)
            await sender
            await until(inbox_empty, timeout_s=60)
            assert proc.poll() is None, "the router is still running"
    finally:
        router.stop()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (incidents,) = conn.execute("SELECT count(*) FROM incidents").fetchone()
        per_incident = [
            n for (n,) in conn.execute("SELECT count(*) FROM outbox GROUP BY incident_id")
        ]
    assert incidents == GROUPS
    assert per_incident == [1] * GROUPS, "one notification per incident, none again"
