"""create_app(): the aiohttp app, its routes, and the start and stop of its workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web

from router import api, auth, intake, serving
from router.alertmanager import Alertmanager
from router.channels import build_channels, template_parts
from router.chatops.commands import Commands
from router.config import RouterConfig, load_config, secret_values
from router.delivery import Clock, DeliverySettings, Outbox
from router.errors import ConfigError
from router.logs import event, set_secrets
from router.metrics import Metrics
from router.outcomes import Outcomes
from router.pipeline import Pipeline
from router.planner import Planner
from router.render import Renderer
from router.store import Store
from router.store.engines import store_for
from router.store.postgres import PostgresStore

log = logging.getLogger("router.app")

SWEEP_INTERVAL = timedelta(seconds=10)  # inhibition released, escalation due
PRUNE_INTERVAL = timedelta(hours=1)  # storage.retention applied


def utc_now() -> datetime:
    """The current time, aware, in UTC (the default clock)."""
    return datetime.now(UTC)


@dataclass
class Runtime:
    """The running router's parts that reload and the workers swap or start: the config
    running now, its renderer, the outbox (None until the workers start)."""

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


def build_renderer(config: RouterConfig) -> Renderer:
    """The config's templates, every one checked now (each part every kind needs, compiled, its
    includes found): raises ConfigError naming file and line."""
    override = (
        config.resolve_path(config.templates.directory) if config.templates.directory else None
    )
    renderer = Renderer(override)
    renderer.check(template_parts())
    return renderer


def create_app(
    config: RouterConfig,
    *,
    dry_run: bool = False,
    clock: Clock = utc_now,
    config_path: str | None = None,
) -> web.Application:
    """Build the app for one config; raises ConfigError if a template does not compile."""
    renderer = build_renderer(config)
    set_secrets(secret_values(config))
    store = store_for(config)
    app = web.Application(
        client_max_size=config.server.max_body_bytes, middlewares=[serving.bounded_bodies()]
    )
    metrics, outcomes, wake_outbox = Metrics(), Outcomes(), asyncio.Event()
    planner = Planner(
        store,
        lambda new_id: Pipeline(config, new_id),
        wake_outbox=wake_outbox,
        outcomes=outcomes,
        metrics=metrics,
    )
    rt = app[RUNTIME] = Runtime(
        config,
        store,
        planner,
        renderer,
        dry_run,
        clock,
        metrics=metrics,
        outcomes=outcomes,
        wake_outbox=wake_outbox,
        config_path=config_path,
    )
    app[intake.INTAKE] = intake.Intake(
        config=lambda: rt.config,
        accept=planner.accept,
        backlog=lambda: planner.backlog,
        metrics=rt.metrics.intake,
        clock=clock,
        on_accepted=rt.outcomes.pending,
    )
    app.router.add_post("/webhook", intake.handle_webhook)
    app[api.READS] = api.Reads(
        store,
        outcomes,
        metrics,
        config=lambda: rt.config,
        clock=clock,
        backlog=lambda: planner.backlog,
        delivering=lambda: (
            rt.outbox is not None and rt.outbox.task is not None and not rt.outbox.task.done()
        ),
    )
    app.router.add_get("/api/v1/alerts", api.handle_alerts)
    app.router.add_get("/api/v1/incidents", api.handle_incidents)
    app.router.add_get("/api/v1/payloads/{correlation_id}", api.handle_payload)
    app.router.add_get("/healthz", api.handle_healthz)
    app.router.add_get("/readyz", api.handle_readyz)
    app.router.add_get("/metrics", api.handle_metrics)
    app.router.add_post("/-/reload", handle_reload)
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
    alertmanager = Alertmanager(timedelta(seconds=2))  # inside Slack's 3-second answer window
    # On PostgreSQL, an ack taken by a replica that does not plan waits in the store's
    # `commands` table for the planner's; every router applies what waits there while it plans.
    queue = rt.store if isinstance(rt.store, PostgresStore) else None
    rt.commands = Commands(
        rt.planner,
        rt.clock,
        alertmanager,
        chatops.alertmanager_url,
        chatops.default_silence,
        rt.metrics,
        queue=queue,
    )
    commands = rt.commands
    telegram = None
    if chatops.telegram is not None and rt.dry_run:
        event(
            log,
            logging.WARNING,
            "telegram_chatops_off",
            detail="--dry-run does not talk to Telegram",
        )
    elif chatops.telegram is not None:
        from router.chatops.telegram import TelegramBot  # python-telegram-bot: only when used

        telegram = TelegramBot(chatops.telegram, rt.commands, rt.store)
    slack = None
    if chatops.slack is not None:
        from router.chatops.slack import SlackApp  # slack-sdk: only when used

        slack = SlackApp(chatops.slack, rt.commands)
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


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    await rt.store.open()
    try:
        await rt.planner.start()
    except BaseException:
        await rt.store.aclose()
        raise
    rt.metrics.declare(rt.config)
    rt.metrics.config_loaded(True, rt.clock().timestamp())
    event(
        log,
        logging.INFO,
        "store_opened",
        path=rt.store.path,
        firing_alerts=len(rt.planner.state.alerts),
        open_incidents=len(rt.planner.state.incidents),
    )
    yield
    await rt.planner.aclose()
    await rt.store.aclose()


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    d = rt.config.delivery
    settings = DeliverySettings(
        max_age=d.max_age,
        storm_threshold=d.storm_threshold,
        backoff_base=d.min_backoff,
        backoff_max=d.max_backoff,
    )
    rt.outbox = Outbox(
        rt.store,
        build_channels(rt.config, rt.renderer, dry_run=rt.dry_run),
        rt.clock,
        settings,
        metrics=rt.metrics,
        wake=rt.wake_outbox,
    )
    rt.outbox.task = asyncio.create_task(rt.outbox.run(), name="outbox")
    sweeper = asyncio.create_task(_sweep_forever(rt), name="sweeper")
    if rt.config_path is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _reload_in_background, rt)
    yield
    if rt.config_path is not None:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await rt.outbox.drain(rt.config.server.shutdown_grace)


RESTART_ONLY = (
    "server.listen",
    "storage.path",
    "storage.url",
    "storage.password",
    "storage.synchronous",
    "chatops",
)


async def reload_config(rt: Runtime) -> tuple[bool, list[str]]:
    """Load the config file again: validate all of it first, then switch, else keep the old one.

    Returns (switched, problems or notes). Deliveries in flight finish with the old channels.
    """
    if rt.config_path is None:
        return False, ["this router was not started from a file"]
    try:
        new = load_config(rt.config_path)
        renderer = build_renderer(new)
    except ConfigError as exc:
        rt.metrics.config_loaded(False, rt.clock().timestamp())
        problems = [str(p) for p in exc.problems]
        event(log, logging.ERROR, "config_reload_failed", config=rt.config_path, problems=problems)
        return False, problems
    # Compared with what runs, not with the previous file: a change undone needs no restart.
    notes = [
        f"{key} changed: it takes effect at the next restart"
        for key in RESTART_ONLY
        if _section(rt.started, key) != _section(new, key)
    ]
    await rt.planner.use_pipeline(Pipeline(new, rt.store.new_incident_id))
    rt.config, rt.renderer = new, renderer
    set_secrets(secret_values(new))
    if rt.outbox is not None:
        rt.outbox.replace_channels(build_channels(new, renderer, dry_run=rt.dry_run))
    rt.metrics.declare(new)
    rt.metrics.config_loaded(True, rt.clock().timestamp())
    event(
        log,
        logging.INFO,
        "config_reloaded",
        config=rt.config_path,
        receivers=len(new.receivers),
        notes=notes,
    )
    return True, notes


def _section(config: RouterConfig, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        value = getattr(value, part)
    dump = getattr(value, "model_dump", None)
    return dump() if dump is not None else value


_RELOADS: set[asyncio.Task[tuple[bool, list[str]]]] = set()


def _reload_in_background(rt: Runtime) -> None:
    task = asyncio.create_task(reload_config(rt), name="reload")
    _RELOADS.add(task)
    task.add_done_callback(_RELOADS.discard)


async def handle_reload(request: web.Request) -> web.Response:
    """POST /-/reload (as Prometheus and Alertmanager have it), behind the webhook's auth."""
    rt = request.app[RUNTIME]
    auth.require(request, rt.config.server.auth)
    switched, messages = await reload_config(rt)
    if not switched:
        body = {
            "status": "error",
            "error": "config not reloaded; the previous one stays",
            "problems": messages,
        }
        return web.json_response(body, status=400)
    return web.json_response({"status": "reloaded", "notes": messages})


async def _sweep_forever(rt: Runtime) -> None:
    since_prune = PRUNE_INTERVAL
    while True:
        await asyncio.sleep(SWEEP_INTERVAL.total_seconds())
        try:
            plan = await rt.planner.sweep(rt.clock(), uuid.uuid4().hex[:16])
            rt.metrics.observe_plan(plan)
            since_prune += SWEEP_INTERVAL
            if since_prune >= PRUNE_INTERVAL:
                since_prune = timedelta(0)
                await rt.store.prune(rt.config.storage.retention, rt.clock())
        except Exception:  # the sweeper must outlive any one failure; the next tick retries
            log.exception("sweep_failed")
