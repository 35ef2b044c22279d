"""create_app(): routes, state, and the start and stop of the store and background workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from router import api, intake
from router.alertmanager import Alertmanager
from router.channels import CHANNELS, build_channels
from router.chatops.commands import Commands
from router.chatops.slack import SlackApp
from router.chatops.telegram import TelegramBot
from router.config import RouterConfig
from router.delivery import Clock, DeliverySettings, Outbox
from router.logs import event
from router.pipeline import Pipeline
from router.render import Renderer
from router.runtime import RUNTIME, Runtime, utc_now
from router.store import Store

log = logging.getLogger("router.web")

SWEEP_INTERVAL_S = 10.0
PRUNE_INTERVAL_S = 3600.0


def create_app(
    config: RouterConfig, *, dry_run: bool = False, clock: Clock = utc_now
) -> web.Application:
    """Build the app for one config; raises ConfigError if a template does not compile."""
    override = (
        config.resolve_path(config.templates.directory) if config.templates.directory else None
    )
    renderer = Renderer(override)
    renderer.check([*CHANNELS, *(f"{k}/digest" for k, c in CHANNELS.items() if c.storm_guard)])
    store = Store(config.resolve_path(config.storage.path), synchronous=config.storage.synchronous)
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[RUNTIME] = Runtime(config, store, renderer, dry_run, clock)
    app.router.add_post("/webhook", intake.handle_webhook)
    app.router.add_get("/api/v1/alerts", api.handle_alerts)
    app.router.add_get("/api/v1/incidents", api.handle_incidents)
    app.router.add_get("/healthz", api.handle_healthz)
    app.router.add_get("/readyz", api.handle_readyz)
    app.router.add_get("/metrics", api.handle_metrics)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_workers_ctx)
    _add_chatops(app, config)
    return app


def _add_chatops(app: web.Application, config: RouterConfig) -> None:
    """Routes and lifecycle of /ack from Telegram and Slack, when routes.yaml configures them."""
    rt = app[RUNTIME]
    chatops = config.chatops
    if chatops.telegram is None and chatops.slack is None:
        return
    alertmanager = Alertmanager()
    rt.commands = Commands(
        rt.store,
        rt.clock,
        alertmanager,
        chatops.alertmanager_url,
        chatops.default_silence,
        rt.metrics,
    )
    telegram = None
    if chatops.telegram is not None and rt.dry_run:
        event(
            log,
            logging.WARNING,
            "telegram_chatops_off",
            detail="--dry-run does not talk to Telegram",
        )
    elif chatops.telegram is not None:
        telegram = TelegramBot(chatops.telegram, rt.commands, rt.store)
    slack = SlackApp(chatops.slack, rt.commands) if chatops.slack else None
    if telegram is not None and telegram.config.mode == "webhook":
        app.router.add_post("/telegram/webhook", telegram.handle_webhook)
    if slack is not None:
        app.router.add_post("/slack/commands", slack.handle_command)
        app.router.add_post("/slack/interactions", slack.handle_interaction)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if telegram is not None:
            await telegram.start()
        yield
        if telegram is not None:
            await telegram.aclose()
        if slack is not None:
            await slack.aclose()
        await alertmanager.aclose()

    app.cleanup_ctx.append(lifecycle)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    await rt.store.open(lambda new_id: Pipeline(rt.config, new_id))
    rt.metrics.reload_ok.set(1)
    rt.metrics.reload_time.set(rt.clock().timestamp())
    event(
        log,
        logging.INFO,
        "store_opened",
        path=rt.store.path,
        firing_alerts=len(rt.store.state.alerts),
        open_incidents=len(rt.store.state.incidents),
    )
    yield
    await rt.store.aclose()


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    d = rt.config.delivery
    settings = DeliverySettings(
        max_age=d.max_age,
        storm_threshold=d.storm_threshold,
        backoff_base_s=d.min_backoff.total_seconds(),
        backoff_max_s=d.max_backoff.total_seconds(),
    )
    rt.outbox = Outbox(
        rt.store,
        build_channels(rt.config, rt.renderer, dry_run=rt.dry_run),
        rt.clock,
        settings,
        metrics=rt.metrics,
    )
    rt.outbox.task = asyncio.create_task(rt.outbox.run(), name="outbox")
    sweeper = asyncio.create_task(_sweep_forever(rt), name="sweeper")
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await rt.outbox.aclose()


async def _sweep_forever(rt: Runtime) -> None:
    since_prune = PRUNE_INTERVAL_S
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        try:
            plan = await rt.store.sweep(rt.clock(), uuid.uuid4().hex[:16])
            rt.metrics.observe_plan(plan)
            if plan.outbox and rt.outbox is not None:
                rt.outbox.wake.set()
            since_prune += SWEEP_INTERVAL_S
            if since_prune >= PRUNE_INTERVAL_S:
                since_prune = 0
                await rt.store.prune(rt.config.storage.retention, rt.clock())
        except Exception:  # the sweeper must outlive any one failure; the next tick retries
            log.exception("sweep_failed")
