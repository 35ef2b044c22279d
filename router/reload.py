"""The config running now and its renderer; a reload validates the file's, then switches to it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from router.channels import build_channels, template_parts
from router.config import RouterConfig, load_config, secret_values
from router.delivery import Outbox
from router.errors import ConfigError, StoreError
from router.logs import event, set_secrets
from router.metrics import Metrics
from router.pipeline import Pipeline
from router.planner import Planner
from router.render import Renderer

log = logging.getLogger("router.reload")

# Settings read once at start: a reload that changes them says so (and keeps running with them).
RESTART_ONLY = (
    "server.listen",
    "storage.path",
    "storage.url",
    "storage.password",
    "storage.synchronous",
    "chatops",
)


def build_renderer(config: RouterConfig) -> Renderer:
    """The config's templates, every one checked now (each part every kind needs, compiled, its
    includes found): raises ConfigError naming file and line."""
    override = (
        config.resolve_path(config.templates.directory) if config.templates.directory else None
    )
    renderer = Renderer(override)
    renderer.check(template_parts())
    return renderer


class Reloader:
    """Holds the config running now (`config`) and its `renderer`; `reload()` loads `path` again
    and hands the new config to the planner and the outbox, or keeps the old one.

    `started` is the config loaded at start: what RESTART_ONLY settings still run with.
    """

    def __init__(
        self,
        config: RouterConfig,
        renderer: Renderer,
        *,
        path: str | None,
        planner: Planner,
        outbox: Outbox,
        metrics: Metrics,
        clock: Callable[[], datetime],
        dry_run: bool = False,
    ) -> None:
        """`path` is the file to load again (None: reload refuses, e.g. a config built in a
        test); `dry_run` builds DryRunChannels, as the outbox's first channels were built."""
        self.config = self.started = config
        self.renderer = renderer
        self.path = path
        self._planner = planner
        self._outbox = outbox
        self._metrics = metrics
        self._clock = clock
        self._dry_run = dry_run
        self._background: set[asyncio.Task[tuple[bool, list[str]]]] = set()

    async def equip_outbox(self) -> None:
        """Give the outbox the channels of the config running now (at start and each reload),
        then dead-letter what it can never send (dead_letter_unsendable)."""
        channels = build_channels(self.config, self.renderer, dry_run=self._dry_run)
        self._outbox.replace_channels(channels)
        await self.dead_letter_unsendable()

    async def dead_letter_unsendable(self) -> None:
        """Make dead letters of the queued notifications no replica will send, with why.

        One router: those of a channel kind no receiver has any more (the outbox claims only
        kinds it has channels for, so they would wait forever; a removed destination of a kind
        still configured is dead-lettered as it is claimed, router/delivery.py). Replicas on one
        database (a shared outbox) may run different configs for a while (a rolling update):
        a replica leaves the destinations its config lacks to one whose config has them, and
        dead-letters their rows only once they waited longer than delivery.max_age (the age at
        which a retried notification is given up too). A store that fails here is logged; the
        next start, reload or sweep tries again.
        """
        kinds = sorted({d.channel for d in self._outbox.channels})
        max_age = self.config.delivery.max_age
        try:
            if self._outbox.shared:
                reason = (
                    "its destination is not in this replica's config, and no replica sent it"
                    f" within delivery.max_age ({max_age})"
                )
                dead = await self._planner.store.mark_dead_unless(
                    kinds,
                    reason,
                    destinations=list(self._outbox.channels),
                    created_before=self._clock() - max_age,
                )
            else:
                reason = (
                    "its channel kind is no longer in the config (no receiver has one);"
                    " kinds configured: " + (", ".join(kinds) or "none")
                )
                dead = await self._planner.store.mark_dead_unless(kinds, reason)
        except StoreError as exc:
            event(log, logging.ERROR, "outbox_store_error", error=str(exc))
            return
        for dest, count in sorted(dead.items()):
            self._metrics.dead.labels(dest.receiver, dest.channel).inc(count)
            event(
                log,
                logging.ERROR,
                "notifications_dead",
                receiver=dest.receiver,
                channel=dest.channel,
                notifications=count,
                error=reason,
            )

    @property
    def shared(self) -> bool:
        """Whether other replicas deliver from the same database (the outbox's `shared`)."""
        return self._outbox.shared

    async def reload(self) -> tuple[bool, list[str]]:
        """Load the file again: validate all of it first, then switch, else keep the old one.

        Returns (switched, problems or notes). Deliveries in flight finish with the old channels.
        """
        if self.path is None:
            return False, ["this router was not started from a file"]
        try:
            new = load_config(self.path)
            renderer = build_renderer(new)
        except ConfigError as exc:
            self._metrics.config_loaded(False, self._clock().timestamp())
            problems = [str(p) for p in exc.problems]
            event(log, logging.ERROR, "config_reload_failed", config=self.path, problems=problems)
            return False, problems
        # Compared with what runs, not with the previous file: a change undone needs no restart.
        notes = [
            f"{key} changed: it takes effect at the next restart"
            for key in RESTART_ONLY
            if _section(self.started, key) != _section(new, key)
        ]
        await self._planner.use_pipeline(Pipeline(new, self._planner.store.new_incident_id))
        self.config, self.renderer = new, renderer
        set_secrets(secret_values(new))
        await self.equip_outbox()
        self._metrics.declare(new)
        self._metrics.config_loaded(True, self._clock().timestamp())
        event(
            log,
            logging.INFO,
            "config_reloaded",
            config=self.path,
            receivers=len(new.receivers),
            notes=notes,
        )
        return True, notes

    def reload_in_background(self) -> None:
        """reload() in a task of its own (SIGHUP's handler: the result is logged only)."""
        task = asyncio.create_task(self.reload(), name="reload")
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _section(config: RouterConfig, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        value = getattr(value, part)
    dump = getattr(value, "model_dump", None)
    return dump() if dump is not None else value
