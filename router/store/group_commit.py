"""Group commit of webhook payloads to the inbox, the same for every engine of the store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from router.errors import StoreError

# One payload to commit: (body, correlation id, received at); an InboxRow before its commit
# gives it an id.
Pending = tuple[bytes, str, datetime]
# The engine's "insert this batch in one transaction, in order; the ids given, in order".
Insert = Callable[[list[Pending]], Awaitable[list[int]]]


class GroupCommit:
    """Commits payloads to the inbox one batch (one transaction) at a time.

    `submit()` queues a payload and waits for its commit; payloads submitted while a batch
    commits share the next one, so the ids are committed in the order of the calls. The
    engine's `insert(batch)` raises StoreError when the batch did not commit (any other
    exception becomes one too): every payload of that batch is then refused with it.
    """

    def __init__(self, insert: Insert) -> None:
        """Commit with `insert` (a coroutine function of the engine; see Insert)."""
        self._insert = insert
        self._pending: list[Pending] = []
        self._waiters: list[asyncio.Future[int]] = []
        self._committer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # set while no batch commits or waits
        self._idle.set()

    @property
    def waiting(self) -> bool:
        """Whether payloads wait for their commit."""
        return bool(self._pending)

    async def submit(self, body: bytes, received_at: datetime, correlation_id: str) -> int:
        """Commit one payload; its inbox id once committed. Raises StoreError if its batch
        did not commit (nothing of it is then accepted)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((body, correlation_id, received_at))
        self._waiters.append(future)
        if self._committer is None:
            self._idle.clear()
            self._committer = asyncio.create_task(self._commit_pending(), name="inbox commit")
        return await future

    async def wait_idle(self) -> None:
        """Return once nothing submitted waits for its commit."""
        await self._idle.wait()

    async def _commit_pending(self) -> None:
        """Commit what waits, one batch at a time, until nothing waits."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                waiters, self._waiters = self._waiters, []
                try:
                    ids = await self._insert(batch)
                except Exception as exc:  # whatever failed, each webhook gets its 503
                    error = exc if isinstance(exc, StoreError) else StoreError(repr(exc))
                    for future in waiters:
                        if not future.done():  # else the caller went away (request cancelled)
                            future.set_exception(error)
                    continue
                for future, inbox_id in zip(waiters, ids, strict=True):
                    if not future.done():
                        future.set_result(inbox_id)
        finally:
            self._committer = None
            self._idle.set()
