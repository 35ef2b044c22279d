"""Group commit: payloads handed over while a batch commits share the next one, in order; a
batch that fails refuses each of its payloads, and the next batch commits on its own."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest

from router.errors import StoreError
from router.store.group_commit import GroupCommit, Pending

T0 = datetime(2026, 11, 1, tzinfo=UTC)


class Inbox:
    """An engine's Insert over a list: each batch waits for `release` before it commits, and
    fails with `fail` (then cleared) if that is set."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.rows: list[str] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def insert(self, batch: list[Pending]) -> list[int]:
        self.batches.append([cid for _, cid, _ in batch])
        await self.release.wait()
        if self.fail is not None:
            exc, self.fail = self.fail, None
            raise exc
        start = len(self.rows) + 1
        self.rows += [cid for _, cid, _ in batch]
        return list(range(start, len(self.rows) + 1))


async def test_payloads_handed_over_during_a_commit_share_the_next_one_in_order() -> None:
    inbox = Inbox()
    commit = GroupCommit(inbox.insert)
    first = asyncio.ensure_future(commit.submit(b"{}", T0, "a"))
    while not inbox.batches:  # "a" is being committed
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(commit.submit(b"{}", T0, cid)) for cid in ("b", "c", "d")]
    await asyncio.sleep(0)
    assert commit.waiting
    inbox.release.set()

    assert await first == 1
    assert await asyncio.gather(*later) == [2, 3, 4]
    assert inbox.batches == [["a"], ["b", "c", "d"]]
    await asyncio.wait_for(commit.wait_idle(), 5)
    assert not commit.waiting


@pytest.mark.parametrize(
    ("error", "message"),
    [
        pytest.param(StoreError("s.db: disk I/O error"), "s.db: disk I/O error", id="store-error"),
        pytest.param(RuntimeError("bug"), "RuntimeError('bug')", id="any-other-error"),
    ],
)
async def test_a_failed_batch_refuses_each_of_its_payloads_and_the_next_one_commits(
    error: Exception, message: str
) -> None:
    inbox = Inbox()
    commit = GroupCommit(inbox.insert)
    inbox.fail = error
    failed = [asyncio.ensure_future(commit.submit(b"{}", T0, cid)) for cid in ("a", "b")]
    while not inbox.batches:
        await asyncio.sleep(0)
    after = asyncio.ensure_future(commit.submit(b"{}", T0, "c"))
    inbox.release.set()

    for future in failed:
        with pytest.raises(StoreError, match=re.escape(message)):
            await future
    assert await after == 1
    assert inbox.rows == ["c"]
    assert inbox.batches == [["a", "b"], ["c"]]


async def test_a_caller_that_went_away_does_not_stop_its_batch() -> None:
    inbox = Inbox()
    commit = GroupCommit(inbox.insert)
    gone = asyncio.ensure_future(commit.submit(b"{}", T0, "a"))
    stays = asyncio.ensure_future(commit.submit(b"{}", T0, "b"))
    while not inbox.batches:
        await asyncio.sleep(0)
    gone.cancel()
    inbox.release.set()

    assert await stays == 2
    assert inbox.rows == ["a", "b"]  # committed, though nobody waits for its id
    await asyncio.wait_for(commit.wait_idle(), 5)
