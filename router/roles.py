"""Which replica plans: this replica's role (planner or standby) and the lease that gives it.

Several replicas may share one PostgreSQL database; one of them at a time is the planner
(routing, inhibition, dedup, escalation, sweeps, acks, pruning, Telegram polling): the one that
holds the planner lease, a row of the database (`planner_lease`: epoch, holder, lease_until
by the database's clock). `keep_lease()` takes the lease when it is free or expired and renews
it every LEASE_RENEW; a replica that dies or loses the database stops renewing, and another
takes the lease once it expired (within LEASE_TTL + LEASE_RENEW), with the epoch one higher.
The store fences every plan transaction on the epoch it holds and an unexpired lease, so a
planner that lost the lease never commits a plan (router.errors.LeaseLost). On SQLite the one
router is always the planner.

Code that runs on the planner only waits on the `Role`:

    while True:
        await role.wait_for(planner=True)
        ...start...
        await role.wait_for(planner=False)
        ...stop...
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from router.errors import StoreError
from router.logs import event

log = logging.getLogger("router.roles")

LEASE_TTL = timedelta(seconds=3)  # a lease not renewed for this long may be taken by another
LEASE_RENEW = timedelta(seconds=1)  # the holder renews, a standby tries to take, this often

PLANNER = "planner"
STANDBY = "standby"


def replica_name() -> str:
    """A name for this process among the replicas: host:pid:random (the random part tells a
    restarted process from the one before it)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Role:
    """This replica's role: the planner, holding the lease of `epoch` (an integer that grows by
    one at every takeover), or a standby (`epoch` 0). `changed()` and `wait_for()` wait for a
    change; `takeovers` and `losses` count the changes since the start."""

    def __init__(self, on_change: Callable[[Role, str], None] | None = None) -> None:
        """A standby; keep_lease() (or take()) makes it the planner. `on_change(role, change)`
        is called at each change, `change` being "taken" or "lost" (metrics count them)."""
        self._epoch = 0
        self._changed = asyncio.Event()
        self._on_change = on_change
        self.takeovers = 0
        self.losses = 0

    @property
    def is_planner(self) -> bool:
        """Whether this replica is the planner now."""
        return self._epoch > 0

    @property
    def epoch(self) -> int:
        """The lease epoch this replica holds as the planner; 0 on a standby."""
        return self._epoch

    @property
    def name(self) -> str:
        """The role's name, "planner" or "standby", as /readyz and /metrics say it."""
        return PLANNER if self.is_planner else STANDBY

    def take(self, epoch: int) -> None:
        """Become (or stay) the planner with the lease of `epoch` (> 0)."""
        if epoch != self._epoch:
            if self._epoch:
                self._set(0, "lost")  # another replica held it in between
            self._set(epoch, "taken")

    def lose(self) -> None:
        """Become a standby (the lease expired, was taken, or cannot be renewed)."""
        if self._epoch:
            self._set(0, "lost")

    def _set(self, epoch: int, change: str) -> None:
        was, self._epoch = self.name, epoch
        if change == "taken":
            self.takeovers += 1
        else:
            self.losses += 1
        # Taking the lease is routine (every start on SQLite; a takeover is warned by the
        # planner's planning_started); losing it is not.
        level = logging.INFO if change == "taken" else logging.WARNING
        event(log, level, "role_changed", was=was, role=self.name, epoch=epoch or None)
        if self._on_change is not None:
            self._on_change(self, change)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self) -> None:
        """Return at the next change of role (or of epoch)."""
        await self._changed.wait()

    async def wait_for(self, *, planner: bool) -> None:
        """Return once this replica is the planner (`planner=True`) or a standby (False)."""
        while self.is_planner != planner:
            await self.changed()


class Leases(Protocol):
    """What keep_lease() needs of the store (router.store.Store has it)."""

    async def take_lease(self, ttl: timedelta) -> int:
        """Take the planner lease if free or expired, or renew it if this replica holds it,
        for `ttl` by the database's clock; the epoch held, or 0 if another replica holds it.
        Raises StoreError if the database cannot be reached."""

    def drop_lease(self) -> None:
        """Forget the epoch held (the fence refused it): the next take_lease() takes anew."""


async def renew_once(leases: Leases, role: Role, held_since: float | None) -> float | None:
    """One turn of keep_lease(): take or renew the lease and set `role` from the answer.

    `held_since` is the time.monotonic() at which the last renewal that succeeded started (None
    if none did); returns the new one. A renewal that fails keeps the role until LEASE_TTL after
    that time (the lease in the database lasts at least that long), then drops to standby."""
    started = time.monotonic()
    try:
        epoch = await asyncio.wait_for(leases.take_lease(LEASE_TTL), LEASE_RENEW.total_seconds())
    except (StoreError, TimeoutError) as exc:
        if role.is_planner and (
            held_since is None or started - held_since >= LEASE_TTL.total_seconds()
        ):
            event(log, logging.ERROR, "lease_lost", epoch=role.epoch, error=str(exc) or "timeout")
            leases.drop_lease()
            role.lose()
        return held_since
    if epoch:
        role.take(epoch)
        return started
    role.lose()
    return None


async def keep_lease(leases: Leases, role: Role, held_since: float | None = None) -> None:
    """Take or renew the lease every LEASE_RENEW, for ever (`held_since`: as renew_once()
    returned it for the first take); the caller cancels the task at shutdown."""
    while True:
        started = time.monotonic()
        held_since = await renew_once(leases, role, held_since)
        await asyncio.sleep(max(0.0, LEASE_RENEW.total_seconds() - (time.monotonic() - started)))
