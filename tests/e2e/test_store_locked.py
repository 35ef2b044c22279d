"""Another program holds the store's write lock (sqlite3 shell, a backup tool): webhooks get
503 and /readyz is not ready while it does; once it lets go, both recover and nothing is lost."""

from __future__ import annotations

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
