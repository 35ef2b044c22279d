"""create_app(): the aiohttp app, its routes, and the start and stop of its workers; serve()."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from aiohttp import web

from router import __version__, api, auth, heap, intake, serving
from router.alertmanager import Alertmanager
from router.chatops.commands import Commands
from router.config import RouterConfig, secret_values
from router.delivery import Clock, DeliverySettings, Outbox
from router.errors import StoreError
from router.logs import event, set_secrets
from router.metrics import Metrics
from router.outcomes import Outcomes
from router.pipeline import Pipeline
from router.planner import Planner
from router.reload import Reloader, build_renderer
from router.roles import Role, keep_lease, renew_once
from router.store import Store
from router.store.engines import store_for, where
from router.store.postgres import PostgresStore

log = logging.getLogger("router.app")

SWEEP_INTERVAL = timedelta(seconds=10)  # inhibition released, escalation due
PRUNE_INTERVAL = timedelta(hours=1)  # storage.retention applied

# The app's parts that handlers and tests reach (routes.yaml's config: RELOADER's `config`).
STORE = web.AppKey("store", Store)
PLANNER = web.AppKey("planner", Planner)
OUTBOX = web.AppKey("outbox", Outbox)
RELOADER = web.AppKey("reloader", Reloader)
COMMANDS = web.AppKey("commands", Commands)  # only when routes.yaml configures chat-ops
ROLE = web.AppKey("role", Role)  # this replica's: planner or standby (router/roles.py)


def utc_now() -> datetime:
    """The current time, aware, in UTC (the default clock)."""
    return datetime.now(UTC)


def create_app(
    config: RouterConfig,
    *,
    dry_run: bool = False,
    clock: Clock = utc_now,
    config_path: str | None = None,
) -> web.Application:
    """Build the app for one config; raises ConfigError if a template does not compile.

    `config_path` is the file POST /-/reload and SIGHUP load again; `dry_run` logs each
    notification instead of sending it. The store opens, and the workers start, with the app.
    """
    renderer = build_renderer(config)
    set_secrets(secret_values(config))
    store = store_for(config)
    app = web.Application(client_max_size=config.server.max_body_bytes)
    metrics, outcomes, wake_outbox = Metrics(), Outcomes(), asyncio.Event()
    role = Role(on_change=metrics.role_changed)
    planner = Planner(
        store,
        lambda new_id: Pipeline(config, new_id),
        wake_outbox=wake_outbox,
        outcomes=outcomes,
        metrics=metrics,
    )
    d = config.delivery
    settings = DeliverySettings(
        max_age=d.max_age,
        storm_threshold=d.storm_threshold,
        backoff_base=d.min_backoff,
        backoff_max=d.max_backoff,
    )
    # Its channels come with the workers (_workers_ctx), from the config running then.
    outbox = Outbox(
        store,
        {},
        clock,
        settings,
        metrics=metrics,
        wake=wake_outbox,
        shared=isinstance(store, PostgresStore),
    )
    reloader = Reloader(
        config,
        renderer,
        path=config_path,
        planner=planner,
        outbox=outbox,
        metrics=metrics,
        clock=clock,
        dry_run=dry_run,
    )
    app.middlewares.append(serving.bounded_bodies(lambda: reloader.config.server.bodies_in_flight))
    app[STORE], app[PLANNER], app[OUTBOX], app[RELOADER] = store, planner, outbox, reloader
    app[ROLE] = role
    app[intake.INTAKE] = intake.Intake(
        config=lambda: reloader.config,
        accept=planner.accept,
        backlog=lambda: planner.backlog,
        metrics=metrics.intake,
        clock=clock,
        on_accepted=outcomes.pending,
    )
    app.router.add_post("/webhook", intake.handle_webhook)
    app[api.READS] = api.Reads(
        store,
        outcomes,
        metrics,
        config=lambda: reloader.config,
        clock=clock,
        backlog=lambda: planner.backlog,
        delivering=lambda: outbox.task is not None and not outbox.task.done(),
        role=role,
    )
    app.router.add_get("/api/v1/alerts", api.handle_alerts)
    app.router.add_get("/api/v1/incidents", api.handle_incidents)
    app.router.add_get("/api/v1/payloads/{correlation_id}", api.handle_payload)
    app.router.add_get("/healthz", api.handle_healthz)
    app.router.add_get("/readyz", api.handle_readyz)
    app.router.add_get("/metrics", api.handle_metrics)
    app.router.add_post("/-/reload", handle_reload)
    # Each is called with the app last; the store opens first and closes last.
    app.cleanup_ctx.append(functools.partial(_store_ctx, planner, role, reloader, metrics, clock))
    app.cleanup_ctx.append(
        functools.partial(_workers_ctx, outbox, planner, role, reloader, metrics, clock)
    )
    _add_chatops(app, config, planner, role, metrics, clock, dry_run=dry_run)
    return app


def _add_chatops(
    app: web.Application,
    config: RouterConfig,
    planner: Planner,
    role: Role,
    metrics: Metrics,
    clock: Clock,
    *,
    dry_run: bool,
) -> None:
    """Routes and lifecycle of /ack from Telegram and Slack, when routes.yaml configures them."""
    chatops = config.chatops
    if chatops.telegram is None and chatops.slack is None:
        return
    alertmanager = Alertmanager(timedelta(seconds=2))  # inside Slack's 3-second answer window
    # On PostgreSQL, an ack taken by a replica that does not plan waits in the store's
    # `commands` table for the planner's; every router applies what waits there while it plans.
    queue = planner.store if isinstance(planner.store, PostgresStore) else None
    commands = Commands(
        planner,
        clock,
        alertmanager,
        chatops.alertmanager_url,
        chatops.default_silence,
        metrics,
        queue=queue,
        planning=lambda: planner.planning,  # the role AND its epoch's state loaded
    )
    app[COMMANDS] = commands
    telegram = None
    if chatops.telegram is not None and dry_run:
        event(
            log,
            logging.WARNING,
            "telegram_chatops_off",
            detail="--dry-run does not talk to Telegram",
        )
    elif chatops.telegram is not None:
        from router.chatops.telegram import (  # python-telegram-bot: only when used
            TELEGRAM_BOT,
            TelegramBot,
        )

        telegram = app[TELEGRAM_BOT] = TelegramBot(
            chatops.telegram, commands, planner.store, role=role
        )
    slack = None
    if chatops.slack is not None:
        from router.chatops.slack import SlackApp  # slack-sdk: only when used

        slack = SlackApp(chatops.slack, commands)
    if telegram is not None and telegram.config.mode == "webhook":
        app.router.add_post("/telegram/webhook", telegram.handle_webhook)
    if slack is not None:
        app.router.add_post("/slack/commands", slack.handle_command)
        app.router.add_post("/slack/interactions", slack.handle_interaction)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if telegram is not None:
            await telegram.start()
        applier = None
        if queue is not None:
            applier = asyncio.create_task(commands.apply_queued_forever(), name="chat commands")
        yield
        if applier is not None:
            applier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await applier
        if telegram is not None:
            await telegram.aclose()
        if slack is not None:
            await slack.aclose()
        await alertmanager.aclose()

    app.cleanup_ctx.append(lifecycle)


async def _store_ctx(
    planner: Planner,
    role: Role,
    reloader: Reloader,
    metrics: Metrics,
    clock: Clock,
    app: web.Application,
) -> AsyncIterator[None]:
    """The store opens, this replica takes the planner lease if it is free (always on
    SQLite) and, if so, the planner loads the state; while serving, the lease is kept
    (router/roles.py) and the planner follows the role; all close after serving."""
    store = planner.store
    await store.open()
    try:
        # The first take is done before serving: SQLite's router (and the first replica on
        # PostgreSQL) serves with the state loaded, as one process always did.
        held_since = await renew_once(store, role, None)
        if role.is_planner:
            await planner.start()
    except BaseException:
        await store.aclose()
        raise
    lease = asyncio.create_task(keep_lease(store, role, held_since), name="lease")
    follow = asyncio.create_task(planner.follow(role), name="role")
    metrics.declare(reloader.config)
    metrics.config_loaded(True, clock().timestamp())
    event(
        log,
        logging.INFO,
        "store_opened",
        path=store.path,
        firing_alerts=len(planner.state.alerts),
        open_incidents=len(planner.state.incidents),
        role=role.name,
        replica=store.replica,
    )
    yield
    for task in (follow, lease):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await planner.aclose()
    await store.aclose()


async def _workers_ctx(
    outbox: Outbox,
    planner: Planner,
    role: Role,
    reloader: Reloader,
    metrics: Metrics,
    clock: Clock,
    app: web.Application,
) -> AsyncIterator[None]:
    """The outbox and the sweeper run, and SIGHUP reloads, while the app serves; at the end,
    deliveries in flight get server.shutdown_grace to finish."""
    await reloader.equip_outbox()
    outbox.task = asyncio.create_task(outbox.run(), name="outbox")
    sweeper = asyncio.create_task(
        _sweep_forever(planner, role, reloader, metrics, clock), name="sweeper"
    )
    loop = asyncio.get_running_loop()
    if reloader.path is not None:
        loop.add_signal_handler(signal.SIGHUP, reloader.reload_in_background)
    yield
    if reloader.path is not None:
        loop.remove_signal_handler(signal.SIGHUP)
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await outbox.drain(reloader.config.server.shutdown_grace)


async def handle_reload(request: web.Request) -> web.Response:
    """POST /-/reload (as Prometheus and Alertmanager have it), behind the webhook's auth:
    200 with notes once switched; 400 with the file's problems (the old config stays)."""
    reloader = request.app[RELOADER]
    auth.require(request, reloader.config.server.auth)
    switched, messages = await reloader.reload()
    if not switched:
        body = {
            "status": "error",
            "error": "config not reloaded; the previous one stays",
            "problems": messages,
        }
        return web.json_response(body, status=400)
    return web.json_response({"status": "reloaded", "notes": messages})


async def _sweep_forever(
    planner: Planner, role: Role, reloader: Reloader, metrics: Metrics, clock: Clock
) -> None:
    """Every SWEEP_INTERVAL, a sweep (inhibition released, escalation due) and, on a shared
    database, the notifications no replica sent within delivery.max_age dead-lettered
    (Reloader.dead_letter_unsendable); every PRUNE_INTERVAL, the running config's
    storage.retention applied. On the planner only."""
    since_prune = PRUNE_INTERVAL
    while True:
        await asyncio.sleep(SWEEP_INTERVAL.total_seconds())
        if not role.is_planner:  # the planner replica sweeps and prunes
            since_prune = PRUNE_INTERVAL
            continue
        try:
            plan = await planner.sweep(clock(), uuid.uuid4().hex[:16])
            metrics.observe_plan(plan)
            if reloader.shared:  # rows no replica's config had for delivery.max_age
                await reloader.dead_letter_unsendable()
            since_prune += SWEEP_INTERVAL
            if since_prune >= PRUNE_INTERVAL:
                since_prune = timedelta(0)
                await planner.store.prune(reloader.config.storage.retention, clock())
        except Exception:  # the sweeper must outlive any one failure; the next tick retries
            log.exception("sweep_failed")


def serve(
    config: RouterConfig, *, config_path: str, listen: str | None = None, dry_run: bool = False
) -> int:
    """Run the router on `listen` (HOST:PORT; default server.listen) until SIGTERM/SIGINT.

    Returns the exit code: 0 once stopped, 1 if it could not start (the store cannot be opened,
    the port cannot be bound: logged as `startup_failed`). Raises ConfigError if a template of
    `config` does not compile.
    """
    listen = listen or config.server.listen
    host, _, port = listen.rpartition(":")
    app = create_app(config, dry_run=dry_run, config_path=config_path)
    # Last: the state is loaded (and frozen with the rest) when it starts (router/heap.py).
    app.cleanup_ctx.append(lambda _app: heap.frozen_while_serving())
    event(
        log,
        logging.INFO,
        "starting",
        version=__version__,
        listen=listen,
        config=config_path,
        dry_run=dry_run,
        storage=where(config),
    )
    try:
        # SIGTERM/SIGINT: stop accepting, let deliveries in flight finish (server.shutdown_grace).
        web.run_app(
            app,
            host=host or "0.0.0.0",
            port=int(port),
            print=None,
            access_log=None,
            shutdown_timeout=config.server.shutdown_grace.total_seconds(),
            **serving.SERVER_SETTINGS,
        )
    except StoreError as exc:  # the state files: unreadable, locked by another router...
        event(log, logging.ERROR, "startup_failed", error=str(exc))
        return 1
    except OSError as exc:  # the port (in use, not allowed): web.run_app binds it
        event(log, logging.ERROR, "startup_failed", error=f"cannot listen on {listen}: {exc}")
        return 1
    event(log, logging.INFO, "stopped", listen=listen)  # deliveries drained, the store closed
    return 0
