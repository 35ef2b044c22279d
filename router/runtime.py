"""The running router's shared objects, kept in one typed place on the aiohttp app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from router.config import RouterConfig
from router.metrics import Metrics
from router.outcomes import Outcomes
from router.planner import Planner
from router.render import Renderer
from router.store import Store

if TYPE_CHECKING:
    from router.chatops.commands import Commands
    from router.delivery import Clock, Outbox


def utc_now() -> datetime:
    """The current time, aware, in UTC (the default clock)."""
    return datetime.now(UTC)


@dataclass
class Runtime:
    """The running router's parts, shared by the handlers and workers of one app."""

    config: RouterConfig
    store: Store
    planner: Planner
    renderer: Renderer
    dry_run: bool = False
    clock: Clock = field(default=utc_now)
    outbox: Outbox | None = None
    commands: Commands | None = None
    metrics: Metrics = field(default_factory=Metrics)
    outcomes: Outcomes = field(default_factory=Outcomes)
    wake_outbox: asyncio.Event = field(default_factory=asyncio.Event)
    config_path: str | None = None
    # The config loaded at start: what settings that take effect only at restart still run with.
    started: RouterConfig = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.config


RUNTIME = web.AppKey("runtime", Runtime)
