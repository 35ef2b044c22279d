"""The intake process: POST /webhook on the public port in a process of its own.

Python runs one thread at a time per process, so a router that plans and delivers a storm in
the same process answers Alertmanager slower the busier it is. With `server.intake_process`
(the default), `alert-router serve` binds the public port and hands it to a second process
(`IntakeProcess`, the router's side; `run`, the child's side) that answers webhooks: auth,
limits, validation, a group commit to the inbox file (router/inbox.py), the 200, and a byte on
a pipe that wakes planning. Every other request (API, /metrics, chat-ops, /-/reload...) is
passed over a Unix socket to the router's process, which plans, delivers and answers it.

The child exits when the router's process goes away (even by SIGKILL: a pipe it holds closes);
the router restarts a child that died, and stops it first at shutdown. What the child
answered 200 is in the inbox, planned by whichever router process runs next.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from router import heap
from router.config import RouterConfig, load_config, secret_values
from router.errors import ConfigError, StoreError
from router.inbox import Inbox, inbox_path
from router.intake import INTAKE, Intake, handle_webhook
from router.logs import configure, event, set_secrets
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
RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # a child that lived this long starts the restart delay over


# ---------------------------------------------------------------- the router's side


class IntakeProcess:
    """Starts the intake process on `listen`, hears its wake-ups, restarts it if it dies."""

    def __init__(
        self,
        command: list[str],
        listen: socket.socket,
        router_socket: str,
        on_wake: Callable[[], None],
    ) -> None:
        self.command = command  # the child's command line up to its file descriptors
        self.listen = listen
        self.router_socket = router_socket
        self.on_wake = on_wake
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._alive_r, self._alive_w = os.pipe()  # the child reads EOF once we are gone
        os.set_blocking(self._wake_r, False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._wake_r, self._woken)
        self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="intake process")

    def _spawn(self) -> None:
        fds = (self.listen.fileno(), self._wake_w, self._alive_r)
        self.proc = subprocess.Popen(
            [
                *self.command,
                "--listen-fd",
                str(fds[0]),
                "--router-socket",
                self.router_socket,
                "--wake-fd",
                str(fds[1]),
                "--parent-fd",
                str(fds[2]),
            ],
            pass_fds=fds,
        )
        event(log, logging.INFO, "intake_process_started", pid=self.proc.pid)

    def _woken(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        self.on_wake()

    async def _supervise(self) -> None:
        delay = RESTART_MIN_S
        while True:
            assert self.proc is not None
            started = time.monotonic()
            code = await asyncio.to_thread(self.proc.wait)
            if self._stopping:
                return
            if time.monotonic() - started > STABLE_AFTER_S:
                delay = RESTART_MIN_S
            event(
                log,
                logging.ERROR,
                "intake_process_exited",
                pid=self.proc.pid,
                code=code,
                restart_in_s=delay,
                detail="webhooks wait in the listen queue until it is back",
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX_S)
            self._spawn()

    def reload(self) -> None:
        """The router loaded a new config: the child loads it too (auth, limits)."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)

    async def stop(self, grace_s: float) -> None:
        """Stop the child first at shutdown: it stops listening and finishes its commits."""
        self._stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, grace_s + 5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        asyncio.get_running_loop().remove_reader(self._wake_r)
        for fd in (self._wake_r, self._wake_w, self._alive_r, self._alive_w):
            os.close(fd)


# ---------------------------------------------------------------- the child's side


class Front:
    """The intake process's app: /webhook here, everything else passed to the router."""

    def __init__(self, config: RouterConfig, args: argparse.Namespace) -> None:
        self.config = config
        self.config_path: str = args.config
        self.router_socket: str = args.router_socket
        self.wake_fd: int = args.wake_fd
        self.parent_fd: int = args.parent_fd
        self.store_path = str(config.resolve_path(config.storage.path))
        self.metrics = IntakeMetrics()
        self.inbox = Inbox(
            inbox_path(self.store_path), config.storage.synchronous, self._planned_through
        )
        self._store_db: sqlite3.Connection | None = None  # to read the watermark
        self.session: aiohttp.ClientSession | None = None
        os.set_blocking(self.wake_fd, False)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.server.max_body_bytes)
        app[INTAKE] = Intake(
            config=lambda: self.config,
            accept=self.inbox.accept,
            backlog=lambda: self.inbox.backlog,
            metrics=self.metrics,
            clock=lambda: datetime.now(UTC),
        )
        app.router.add_post("/webhook", handle_webhook)
        app.router.add_get("/metrics", self.handle_metrics)
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
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        event(log, logging.INFO, "intake_process_ready", pid=os.getpid())
        yield
        loop.remove_signal_handler(signal.SIGHUP)
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
            os.kill(os.getpid(), signal.SIGTERM)  # aiohttp's graceful stop

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
        headers = CIMultiDict(
            (k, v)
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

    async def handle_metrics(self, request: web.Request) -> web.Response:
        """The router's metrics, and this process's intake counters after them."""
        resp = await self._forward(request, b"")
        if resp.status != 200 or not isinstance(resp.body, bytes):
            return resp
        resp.body = resp.body + self.metrics.exposition()
        return resp


def run(args: argparse.Namespace) -> int:
    """The intake process's main (`alert-router intake`, started by `serve`)."""
    configure(args.log_format, args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            event(log, logging.ERROR, "intake_config_invalid", problem=str(problem))
        return 1
    set_secrets(secret_values(config))  # masked in every log line, as in the router's process
    listen = socket.socket(fileno=args.listen_fd)
    front = Front(config, args)
    sys.setswitchinterval(0.0005)  # see cli.cmd_serve
    heap.install()
    try:
        web.run_app(
            front.app(),
            sock=listen,
            print=None,
            access_log=None,
            shutdown_timeout=config.server.shutdown_grace.total_seconds(),
        )
    except StoreError as exc:
        event(log, logging.ERROR, "intake_store_failed", error=str(exc))
        return 1
    return 0


# ---------------------------------------------------------------- serve with an intake process


def bind(host: str, port: int, wait_s: float = 5.0) -> socket.socket:
    """The public listening socket; waits (bounded) for a previous intake process to let go."""
    host = host.strip("[]") or "0.0.0.0"
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    deadline = time.monotonic() + wait_s
    while True:
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        sock.listen(1024)
        return sock


async def serve(
    app: web.Application,
    listen: socket.socket,
    command: list[str],
    grace_s: float,
    on_wake: Callable[[], None],
    on_started: Callable[[IntakeProcess], None],
) -> None:
    """Run the router's app on a private Unix socket and the intake process on `listen`,
    until SIGTERM or SIGINT; then stop intake first, and the router after it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with tempfile.TemporaryDirectory(prefix="alert-router-") as private:  # mode 0700
        path = os.path.join(private, "router.sock")
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace_s)
        await runner.setup()  # opens the store: a schema upgrade is done before intake starts
        try:
            await web.UnixSite(runner, path).start()
            intake = IntakeProcess(command, listen, path, on_wake)
            intake.start()
            on_started(intake)
            try:
                await stop.wait()
            finally:
                event(log, logging.INFO, "stopping")
                await intake.stop(grace_s)
        finally:
            listen.close()
            await runner.cleanup()
