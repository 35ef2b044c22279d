"""How `serve` runs its processes when webhooks have one of their own (server.intake_process).

    router's process ──fork at startup──▶ supervisor ──fork──▶ intake process (router/front.py)

The router's process binds the public port, then, before any thread or event loop exists,
forks the supervisor: a copy of itself with every module imported, that waits. Once the
router's store is open (a schema upgrade is done before intake starts) the supervisor forks the
intake process from that copy, restarts it when it dies (after 1 s, doubling up to 30 s), passes
SIGTERM (stop) on to it, and exits when the router's process is gone, even by SIGKILL: the
intake process and the supervisor both hold the read end of a pipe whose write end only the
router's process has, and read EOF when it goes. The last one out removes the private folder of
the router's Unix socket: the router's process, or the supervisor after it if it was killed.

Reload: the router's process is the one place that reloads. SIGHUP sent to the supervisor or to
the intake process is passed to the router's process; when the router has loaded the new file
it sends SIGUSR1 to the supervisor, which passes it to the intake process (auth, limits).

Why fork and not exec: the three processes share the pages of the modules they imported
(aiohttp, pydantic, the config...) instead of loading them twice (idle, bench config: 98 MiB
PSS for two exec'd processes, 74 MiB for the three forked ones). Why a supervisor and not fork from the router's process: fork() is
safe only in a process with one thread, and the router's runs the store's and asyncio's.

The router's process then runs at nice +ROUTER_NICE (its store thread nicer still, see
router/store.py): on a machine short of CPU, the intake process answers first and planning and
delivery wait (wrk at 10-alert payloads, 2 cores: full speed at c=16 1,489-1,622/s -> 2,184-
2,593/s; at 1,000/s, the worst webhook p99 of four runs 63 -> 28 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import select
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

from aiohttp import web
from setproctitle import setproctitle

from router import serving
from router.front import Wiring
from router.logs import event

log = logging.getLogger("router.supervisor")

RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # an intake process that lived this long starts the restart delay over
# When the CPU is short, the intake process (Alertmanager's 200) goes first: the router's
# process (planning, delivery) runs this much nicer, and its store thread nicer still.
ROUTER_NICE = 5


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


def _run_and_exit(main: Callable[[], int], what: str) -> NoReturn:
    """The whole life of a forked process: run `main`, log what it raised, flush the logs and
    exit with its code, skipping the atexit work that is the router's."""
    code = 1
    try:
        code = main()
    except BaseException:
        log.exception("the %s failed", what)
    finally:
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(code)


# A Unix socket's path holds at most 107 bytes on Linux (sun_path is 108 with its NUL, unix(7)).
_SUN_PATH_MAX = 107


def _private_folder() -> str:
    """A new folder (mode 0700) for the router's private socket: in TMPDIR, or in /tmp when
    TMPDIR is so deep that `<folder>/router.sock` would not fit in a Unix socket's path."""
    folder = tempfile.mkdtemp(prefix="alert-router-")
    if len(os.fsencode(os.path.join(folder, "router.sock"))) <= _SUN_PATH_MAX:
        return folder
    os.rmdir(folder)
    return tempfile.mkdtemp(prefix="alert-router-", dir="/tmp")


class IntakeProcess:
    """The router's handle on the supervisor: made (forked) at startup, started once the store
    is open, stopped first at shutdown."""

    def __init__(self, listen: socket.socket, run_intake: Callable[[Wiring], int]) -> None:
        """Fork the supervisor now: call this before any thread or event loop is started."""
        if threading.active_count() != 1:
            raise RuntimeError("the supervisor must be forked while the process has one thread")
        self.listen = listen
        self._private = _private_folder()
        self.router_socket = os.path.join(self._private, "router.sock")
        self._wake_r, self._wake_w = os.pipe()  # intake -> router: "the inbox grew"
        self._alive_r, self._alive_w = os.pipe()  # EOF once the router's process is gone
        self._go_r, go_w = os.pipe()  # router -> supervisor: "the store is open"
        self._go_w: int | None = go_w
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self._watcher: asyncio.Task[int] | None = None
        self.on_failed: Callable[[], None] = lambda: None
        self.pid = os.fork()
        if self.pid == 0:
            # Built inside: whatever it raises must end this process, not return into the router.
            _run_and_exit(lambda: _Supervisor(self, go_w, run_intake).run(), "intake supervisor")
        for fd in (self._go_r, self._wake_w, self._alive_r):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.nice(ROUTER_NICE)  # Linux: this thread, and the threads it starts from now on
        event(log, logging.INFO, "intake_supervisor_started", pid=self.pid)

    @property
    def running(self) -> bool:
        return self._watcher is not None and not self._watcher.done()

    def start(self, on_wake: Callable[[], None]) -> None:
        """The store is open: the supervisor starts the intake process."""

        def woken() -> None:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
            on_wake()

        asyncio.get_running_loop().add_reader(self._wake_r, woken)
        assert self._go_w is not None
        os.write(self._go_w, b"g")
        os.close(self._go_w)
        self._go_w = None
        self._watcher = asyncio.create_task(self._watch(), name="intake supervisor")

    async def _watch(self) -> int:
        _, status = await asyncio.to_thread(os.waitpid, self.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if not self._stopping:
            event(
                log,
                logging.ERROR,
                "intake_supervisor_exited",
                pid=self.pid,
                code=code,
                detail="nothing would restart the intake process now: stopping alert-router"
                " (exit code 1) so that its service manager starts it again",
            )
            self.on_failed()
        return code

    def reload(self) -> None:
        """The router loaded a new config: the intake process loads it too (auth, limits)."""
        if self.running:
            os.kill(self.pid, signal.SIGUSR1)

    async def stop(self, grace_s: float) -> None:
        """Stop the intake process first at shutdown: it stops listening, finishes its commits."""
        self._stopping = True
        watcher = self._watcher
        if watcher is None:  # never started: the supervisor goes when this pipe closes
            assert self._go_w is not None
            os.close(self._go_w)
            self._go_w = None
            await asyncio.to_thread(os.waitpid, self.pid, 0)
        else:
            if not watcher.done():
                os.kill(self.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(watcher), grace_s + 5.0)
                except TimeoutError:
                    os.kill(self.pid, signal.SIGKILL)  # intake follows once we exit (its pipe)
                    await watcher
            asyncio.get_running_loop().remove_reader(self._wake_r)
        for fd in (self._wake_r, self._alive_w):
            os.close(fd)

    def remove_private(self) -> None:
        shutil.rmtree(self._private, ignore_errors=True)


class _Supervisor:
    """The supervisor process's loop: synchronous, one thread, nothing imported after fork."""

    def __init__(
        self, handle: IntakeProcess, go_w: int, run_intake: Callable[[Wiring], int]
    ) -> None:
        self.handle = handle
        self.run_intake = run_intake
        self.router_pid = os.getppid()
        self.child = 0
        self.stopping = False
        self.router_ready = False  # its store is open and it reloads on SIGHUP
        for fd in (go_w, handle._wake_r, handle._alive_w):
            os.close(fd)
        self._sig_r, self._sig_w = os.pipe()  # signals wake select() (signal.set_wakeup_fd)
        os.set_blocking(self._sig_w, False)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTERM:
            self.stopping = True
        if self.child:  # SIGTERM, and SIGUSR1 (the router reloaded)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signum)

    def _forward_reload(self, signum: int, frame: FrameType | None) -> None:
        """SIGHUP here or in the intake process: the router's process reloads (and then us)."""
        if self.router_ready and not _gone(self.handle._alive_r):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.router_pid, signal.SIGHUP)

    def run(self) -> int:
        try:
            return self._run()
        finally:
            if _gone(self.handle._alive_r):  # killed: nobody else removes its socket's folder
                self.handle.remove_private()

    def _run(self) -> int:
        setproctitle(f"alert-router: intake supervisor (router {self.router_pid})")
        signal.set_wakeup_fd(self._sig_w)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_signal)
        signal.signal(signal.SIGHUP, self._forward_reload)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the router's process stops us
        if os.read(self.handle._go_r, 1) != b"g":
            return 0  # the router's process stopped (or died) before its store opened
        os.close(self.handle._go_r)
        self.router_ready = True
        delay = RESTART_MIN_S
        while not self.stopping:
            started = time.monotonic()
            self.child = os.fork()
            if self.child == 0:
                self._intake()
            if self.stopping:  # SIGTERM came between fork() and the line above
                os.kill(self.child, signal.SIGTERM)
            event(log, logging.INFO, "intake_process_started", pid=self.child)
            pid = self.child
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            self.child = 0
            if self.stopping or self._router_gone(0.0):
                break
            if time.monotonic() - started > STABLE_AFTER_S:
                delay = RESTART_MIN_S
            event(
                log,
                logging.ERROR,
                "intake_process_exited",
                pid=pid,
                code=code,
                restart_in_s=delay,
                detail="webhooks wait in the listen queue until it is back",
            )
            if self._router_gone(delay):
                break
            delay = min(delay * 2, RESTART_MAX_S)
        return 0

    def _router_gone(self, wait_s: float) -> bool:
        """Wait up to `wait_s`; True as soon as the router's process is gone or SIGTERM came."""
        deadline = time.monotonic() + wait_s
        alive_r = self.handle._alive_r
        while not self.stopping:
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([alive_r, self._sig_r], [], [], left)
            if alive_r in ready:
                return True  # only EOF makes it readable: nothing is ever written to it
            if self._sig_r in ready:
                os.read(self._sig_r, 4096)
            if left == 0.0:
                return False
        return True

    def _intake(self) -> NoReturn:
        """In the intake process, just forked: undo the supervisor's signals, run, exit.
        SIGINT stays ignored: Ctrl-C in a terminal reaches the whole process group, and the
        router's process stops the intake process through us (SIGTERM). SIGHUP is still passed
        to the router's process (the handler stays). SIGUSR1 (reload) is ignored until the
        intake process listens for it: it reads the file as it starts anyway."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        for fd in (self._sig_r, self._sig_w):
            os.close(fd)
        setproctitle(f"alert-router: intake (router {self.router_pid})")
        handle = self.handle
        wiring = Wiring(handle.listen, handle.router_socket, handle._wake_w, handle._alive_r)
        _run_and_exit(functools.partial(self.run_intake, wiring), "intake process")


def _gone(alive_r: int) -> bool:
    """True once the router's process is gone: its end of this pipe is closed (EOF)."""
    readable, _, _ = select.select([alive_r], [], [], 0)
    return bool(readable)


async def serve(
    app: web.Application, intake: IntakeProcess, grace_s: float, on_wake: Callable[[], None]
) -> int:
    """Run the router's app on a private Unix socket and the intake process on the public port,
    until SIGTERM or SIGINT (exit 0) or the supervisor's death (exit 1); then stop intake
    first, and the router after it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    failed = False

    def supervisor_failed() -> None:
        nonlocal failed
        failed = True
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    intake.on_failed = supervisor_failed
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=grace_s, **serving.SERVER_SETTINGS
    )
    try:
        await runner.setup()  # opens the store: a schema upgrade is done before intake starts
        try:
            await web.UnixSite(runner, intake.router_socket).start()
            intake.start(on_wake)
            await stop.wait()
        finally:
            event(log, logging.INFO, "stopping")
            await intake.stop(grace_s)
            intake.listen.close()
            await runner.cleanup()
    finally:
        intake.remove_private()
    return 1 if failed else 0
