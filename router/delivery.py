"""Outbox workers: take due notifications from the store and hand each to its channel's sender."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from router.errors import StoreError
from router.logs import event
from router.render import Renderer
from router.store import OutboxRow, Store

log = logging.getLogger("router.delivery")


@dataclass(frozen=True)
class Delivered:
    ref: str


@dataclass(frozen=True)
class RetryLater:
    after_s: float
    reason: str


@dataclass(frozen=True)
class Failed:
    reason: str


Delivery = Delivered | RetryLater | Failed
Sender = Callable[[OutboxRow], Awaitable[Delivery]]
Clock = Callable[[], datetime]


class DryRun:
    """The sender of --dry-run: renders the notification with the channel's templates and logs it."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer

    async def __call__(self, row: OutboxRow) -> Delivery:
        parts, error = self.renderer.render_or_fallback(row.channel, row.view)
        if error:
            event(log, logging.ERROR, "template_failed", incident=row.incident_id, error=error)
        event(
            log,
            logging.INFO,
            "dry_run_notification",
            incident=row.incident_id,
            receiver=row.receiver,
            channel=f"{row.channel}[{row.channel_index}]",
            reason=row.view.reason.value,
            correlation_id=row.correlation_id,
            **parts,
        )
        return Delivered("dry-run")


class Outbox:
    """Delivers due outbox rows; a row is marked sent only after its channel accepted it."""

    def __init__(
        self, store: Store, senders: dict[str, Sender], clock: Clock, poll_s: float = 1.0
    ) -> None:
        self.store = store
        self.senders = senders
        self.clock = clock
        self.poll_s = poll_s
        self.wake = asyncio.Event()
        self.delivered = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            try:
                rows = await self.store.claim_due(self.clock(), channels=sorted(self.senders))
                for row in rows:
                    await self._deliver(row)
            except StoreError as exc:
                # The store is locked or failing: nothing is lost (rows stay queued); try again.
                event(log, logging.ERROR, "outbox_store_error", error=str(exc))
                rows = []
            if not rows:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.poll_s)

    async def _deliver(self, row: OutboxRow) -> None:
        result = await self.senders[row.channel](row)
        now = self.clock()
        if isinstance(result, Delivered):
            await self.store.mark_sent(row.id, result.ref, now)
            self.delivered += 1
        elif isinstance(result, RetryLater):
            await self.store.mark_retry(
                row.id, result.reason, now + timedelta(seconds=result.after_s)
            )
        else:
            event(
                log,
                logging.ERROR,
                "notification_dead",
                incident=row.incident_id,
                channel=row.channel,
                error=result.reason,
                correlation_id=row.correlation_id,
            )
            await self.store.mark_dead(row.id, result.reason)
