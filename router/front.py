"""The intake process: POST /webhook on the public port in a process of its own.

Python runs one thread at a time per process, so a router that plans and delivers a storm in
the same process answers Alertmanager slower the busier it is. With `server.intake_process`
(the default), `alert-router serve` binds the public port and hands it to a second process
(started and restarted by router/supervisor.py) that answers webhooks: auth, limits,
validation, a group commit to the inbox file (router/inbox.py), the 200, and a byte on a pipe
that wakes planning. Every other request (API, /metrics, chat-ops, /-/reload...) is passed over
a Unix socket to the router's process, which plans, delivers and answers it.

The intake process exits when the router's process goes away (even by SIGKILL: a pipe it holds
closes). What it answered 200 is in the inbox, planned by whichever router process runs next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from router import heap, serving
from router.config import RouterConfig, load_config, secret_values
from router.errors import ConfigError, StoreError
from router.inbox import Inbox, inbox_path
from router.intake import INTAKE, Intake, handle_webhook
from router.logs import event, set_secrets
from router.metrics import IntakeMetrics

log = logging.getLogger("router.front")

# Hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp sets itself: not passed on.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
PROXY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Wiring:
    """What the intake process is handed by its supervisor (router/supervisor.py)."""

    listen: socket.socket  # the public port, bound by the router's process
    router_socket: str  # the router's app, for every request but /webhook
    wake_fd: int  # a byte written here wakes the router's planning
    parent_fd: int  # reads EOF once the router's process is gone


class Front:
    """The intake process's app: /webhook here, everything else passed to the router."""

    def __init__(self, config: RouterConfig, config_path: str, wiring: Wiring) -> None:
        self.config = config
        self.config_path = config_path
        self.router_socket = wiring.router_socket
        self.wake_fd = wiring.wake_fd
        self.parent_fd = wiring.parent_fd
        self.store_path = str(config.resolve_path(config.storage.path))
        self.metrics = IntakeMetrics()
        self.inbox = Inbox(
            inbox_path(self.store_path), config.storage.synchronous, self._planned_through
        )
        self._store_db: sqlite3.Connection | None = None  # to read the watermark
        self.session: aiohttp.ClientSession | None = None
        self.stop = asyncio.Event()  # SIGTERM, or the router's process is gone

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.config.server.max_body_bytes,
            middlewares=[serving.bounded_bodies()],
        )
        app[INTAKE] = Intake(
            config=lambda: self.config,
            accept=self.inbox.accept,
            backlog=lambda: self.inbox.backlog,
            metrics=self.metrics,
            clock=lambda: datetime.now(UTC),
        )
        app.router.add_post("/webhook", handle_webhook)
        app.router.add_route("*", "/webhook", _webhook_method_not_allowed)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/readyz", self.handle_readyz)
        app.router.add_route("*", "/{tail:.*}", self.handle_other)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        self.inbox.on_committed = self._wake_router
        await self.inbox.open()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self.router_socket),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=PROXY_TIMEOUT_S),
        )
        loop.add_reader(self.parent_fd, self._parent_gone)
        # SIGUSR1: the router's process has reloaded (SIGHUP here is passed to it, see
        # router/supervisor.py); ignored again once stopping rather than ending this process.
        loop.add_signal_handler(signal.SIGUSR1, self._reload)
        event(log, logging.INFO, "intake_process_ready", pid=os.getpid())
        yield
        loop.remove_signal_handler(signal.SIGUSR1)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        loop.remove_reader(self.parent_fd)
        await self.inbox.aclose()  # after the last handler: every 200 given is committed
        await self.session.close()
        if self._store_db is not None:
            self._store_db.close()

    def _planned_through(self) -> int:
        """The router's watermark, read from its file (never waiting for a lock: the inbox keeps
        its last reading if this fails)."""
        if self._store_db is None:
            self._store_db = sqlite3.connect(self.store_path, timeout=0)
        row = self._store_db.execute("SELECT through FROM inbox_planned").fetchone()
        return int(row[0])

    def _wake_router(self) -> None:
        # A full pipe means wake-ups are already waiting to be read: nothing is lost.
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self.wake_fd, b"!")

    def _parent_gone(self) -> None:
        if not os.read(self.parent_fd, 1):  # EOF: the router's process is gone
            asyncio.get_running_loop().remove_reader(self.parent_fd)
            event(log, logging.WARNING, "intake_process_orphaned", detail="stopping")
            self.stop.set()

    def _reload(self) -> None:
        try:
            self.config = load_config(self.config_path)
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            event(log, logging.ERROR, "intake_reload_failed", problems=problems)
            return
        set_secrets(secret_values(self.config))
        event(log, logging.INFO, "intake_reloaded", config=self.config_path)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self.session is not None
        # aiohttp's client drops the lone surrogates that stand for header bytes that are not
        # UTF-8 (a token followed by 0xff would arrive as the token): pass U+FFFD instead.
        headers = CIMultiDict(
            (k, v.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
            for k, v in request.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding"
        )  # aiohttp has already decoded the body
        headers["X-Forwarded-For"] = request.remote or ""
        url = URL("http://alert-router").join(request.rel_url)
        try:
            async with self.session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            ) as resp:
                content = await resp.read()
                out = CIMultiDict(
                    (k, v) for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP
                )
                return web.Response(status=resp.status, body=content, headers=out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            event(log, logging.WARNING, "router_unreachable", path=request.path, error=str(exc))
            return web.json_response(
                {
                    "status": "error",
                    "reason": "router_unavailable",
                    "error": f"the router process did not answer ({type(exc).__name__});"
                    " it may be starting or stopping",
                },
                status=503,
                headers={"Retry-After": "1"},
            )

    async def handle_other(self, request: web.Request) -> web.Response:
        return await self._forward(request, await request.read())

    async def handle_readyz(self, request: web.Request) -> web.Response:
        """The router's readiness, and not ready while this process cannot accept webhooks."""
        resp = await self._forward(request, b"")
        problem = self.inbox.problem()
        if problem is None or not isinstance(resp.body, bytes):
            return resp
        try:
            reasons = list(orjson.loads(resp.body).get("reasons", []))
        except (orjson.JSONDecodeError, AttributeError):
            reasons = []
        if problem not in reasons:
            reasons.append(f"cannot accept webhooks: {problem}")
        return web.json_response({"status": "not ready", "reasons": reasons}, status=503)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        """The router's metrics, and this process's intake counters after them."""
        resp = await self._forward(request, b"")
        if resp.status != 200 or not isinstance(resp.body, bytes):
            return resp
        resp.body = resp.body + self.metrics.exposition()
        return resp


async def _webhook_method_not_allowed(request: web.Request) -> web.Response:
    """Any method but POST on /webhook: 405, as a server with only that route answers."""
    raise web.HTTPMethodNotAllowed(request.method, ["POST"])


def run(config_path: str, wiring: Wiring) -> int:
    """The intake process's main, in a process forked by the supervisor (logging, the GIL
    switch interval and the garbage collector are set as in the router's process)."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            event(log, logging.ERROR, "intake_config_invalid", problem=str(problem))
        return 1
    set_secrets(secret_values(config))  # masked in every log line, as in the router's process
    front = Front(config, config_path, wiring)
    heap.install()  # what the supervisor froze stays shared with it, copy-on-write
    try:
        asyncio.run(_serve(front, wiring.listen, config.server.shutdown_grace.total_seconds()))
    except StoreError as exc:
        event(log, logging.ERROR, "intake_store_failed", error=str(exc))
        return 1
    return 0


async def _serve(front: Front, listen: socket.socket, grace_s: float) -> None:
    """Answer on `listen` until SIGTERM or the router's process goes; then stop taking
    connections, finish the requests in flight (up to `grace_s`) and their commits."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, front.stop.set)
    runner = web.AppRunner(
        front.app(), access_log=None, shutdown_timeout=grace_s, **serving.SERVER_SETTINGS
    )
    await runner.setup()
    try:
        await web.SockSite(runner, listen).start()
        await front.stop.wait()
    finally:
        await runner.cleanup()
