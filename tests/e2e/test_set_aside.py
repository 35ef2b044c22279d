"""A payload intake accepted whose plan the store cannot write is set aside; the payloads after
it are planned, the planner keeps running, and a restart does not try it again."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import aiohttp
import orjson
import pytest

from ..harness import firing_payload
from ..helpers import wait_http
from .test_state_faults import HEADERS, Router, until

pytestmark = pytest.mark.slow


def far_future_payload() -> bytes:
    """Valid RFC 3339, accepted (200): 9999-12-31 23:59:59 at UTC-14 is past year 9999 in UTC,
    where the store keeps its times."""
    data = orjson.loads(firing_payload(1, "far-future"))
    data["alerts"][0]["startsAt"] = "9999-12-31T23:59:59-14:00"
    return orjson.dumps(data)


async def test_a_payload_the_store_cannot_write_is_set_aside_and_later_ones_go_on(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state" / "state.db"
    router = Router(tmp_path, db)
    try:
        for start in range(2):  # and again after a restart: it stays aside
            proc = router.start()
            await wait_http(f"{router.base}/readyz", proc, timeout_s=30, log=router.log)
            async with aiohttp.ClientSession() as session:
                ids: list[str] = []
                bodies = [firing_payload(1, f"before-{start}"), far_future_payload()]
                for body in [*bodies, firing_payload(1, f"after-{start}")]:
                    async with session.post(
                        f"{router.base}/webhook", data=body, headers=HEADERS
                    ) as resp:
                        assert resp.status == 200, await resp.text()
                        ids.append((await resp.json())["correlation_id"])

                async def outcome(cid: str) -> str:
                    url = f"{router.base}/api/v1/payloads/{cid}"
                    async with session.get(url, headers=HEADERS) as resp:
                        return str((await resp.json()).get("state"))

                async def after_planned(last: str = ids[2]) -> bool:
                    return await outcome(last) == "planned"

                await until(after_planned, timeout_s=30)
                assert await outcome(ids[0]) == "planned"
                assert await outcome(ids[1]) == "failed"
            router.stop()
            assert proc.returncode == 0, router.log.read_text()[-2000:]
    finally:
        router.stop()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        aside = conn.execute("SELECT correlation_id, error FROM set_aside").fetchall()
        (left,) = conn.execute("SELECT count(*) FROM inbox").fetchone()
    assert len(aside) == 2, aside
    assert all("out of range" in error for _, error in aside), aside
    assert left == 0
