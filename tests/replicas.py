"""Several `alert-router serve` processes on one database, and a round-robin client in front.

`Replicas(folder, config, count)` writes `config` to `folder/routes.yaml` (a config without
`server.listen`; `replica_config()` builds one) and starts `count` replicas of
`python -m router serve` on it, each on a free loopback port (`--listen`), with JSON logs in
`folder/<name>/router.log`. Every wait is bounded and a failure quotes the end of every log.
The replicas can be SIGKILLed, stopped, paused (SIGSTOP, as a replica cut off from everything)
and started again; leaving `async with Replicas(...)` stops every process it started (SIGTERM,
then SIGKILL) and leaves no file outside `folder`.

`RoundRobin` posts webhooks to the replicas in turn, as a load balancer in front of them does:
a replica that does not answer (down, paused) or answers 503 is skipped for the next one.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .harness import Fakes, with_fakes
from .helpers import ROOT, free_port

TOKEN = "t0ken"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
READY = timedelta(seconds=30)  # from exec to /readyz answering 200, on a loaded machine
STOP = timedelta(seconds=15)  # from SIGTERM to the exit, before a SIGKILL
PORT_TRIES = 5


def replica_config(url: str, receivers: str, extra: str = "", fakes: Fakes | None = None) -> str:
    """routes.yaml for replicas on the PostgreSQL database at `url`: bearer token TOKEN, quick
    retries, `receivers` (YAML list items; TELEGRAM, SLACK, PAGERDUTY, SMTPHOST and REFUSED
    replaced by the fakes' addresses when `fakes` is given), a route to `main` unless `extra`
    has a `route:`, then `extra`."""
    text = f"""
server: {{auth: {{bearer_token: {TOKEN}}}}}
storage: {{url: "{url}"}}
delivery: {{min_backoff: 50ms, max_backoff: 1s, max_age: 1m}}
receivers:
{receivers}
{"" if "route:" in extra else "route: {receiver: main}"}
{extra}
"""
    return text if fakes is None else with_fakes(text, fakes)


@dataclass
class Replica:
    """One `serve` process of the set (None while not started or after it exited and was
    reaped) and where it listens and logs."""

    name: str
    folder: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        """The base URL, http://127.0.0.1:<port>."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        """Its log file (JSON lines, every start appended)."""
        return self.folder / "router.log"

    @property
    def running(self) -> bool:
        """Whether its process is alive (paused counts as alive)."""
        return self.proc is not None and self.proc.poll() is None

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Its JSON log lines so far, all of them or those whose event is `name`."""
        if not self.log.exists():
            return []
        lines = [
            orjson.loads(line)
            for line in self.log.read_bytes().splitlines()
            if line.startswith(b"{")
        ]
        return [line for line in lines if name is None or line.get("event") == name]

    def tail(self, lines: int = 30) -> str:
        """The last lines of its log, headed by its name and state."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        state = (
            "running" if self.running else f"exited {self.proc.returncode if self.proc else '-'}"
        )
        return f"--- {self.name} ({state}, port {self.port}):\n" + "\n".join(
            text.splitlines()[-lines:]
        )


class Replicas:
    """`count` replicas of `serve` on one config; an async context manager that starts them
    (the first alone, then the others together) and stops them all when left."""

    def __init__(
        self,
        folder: Path,
        config: str,
        count: int,
        *,
        dry_run: bool = False,
        log_level: str = "info",
    ) -> None:
        """Replicas of `config` (written to folder/routes.yaml) in `folder`, not started."""
        self.folder = folder
        self.config = folder / "routes.yaml"
        self.config.write_text(config)
        self.dry_run = dry_run
        self.log_level = log_level
        self.replicas = [Replica(f"r{i}", folder / f"r{i}") for i in range(count)]
        for replica in self.replicas:
            replica.folder.mkdir()

    def __getitem__(self, i: int) -> Replica:
        """The i-th replica."""
        return self.replicas[i]

    def __len__(self) -> int:
        """How many replicas there are (running or not)."""
        return len(self.replicas)

    async def __aenter__(self) -> Replicas:
        """Start every replica: the first, once ready, then the others at once."""
        try:
            await self.start(0)
            await asyncio.gather(*(self.start(i) for i in range(1, len(self))))
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop every replica."""
        await self.aclose()

    def _exec(self, replica: Replica) -> subprocess.Popen[bytes]:
        replica.port = free_port()
        replica.starts += 1
        with open(replica.log, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "router", "serve", "--config", str(self.config)]
                + ["--listen", f"127.0.0.1:{replica.port}", "--log-format", "json"]
                + ["--log-level", self.log_level]
                + (["--dry-run"] if self.dry_run else []),
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=ROOT,
            )

    async def start(self, i: int, ready: timedelta = READY) -> Replica:
        """Start replica `i` (not running) and wait until its /readyz answers 200.

        A port found free can be taken before the router binds it (other suites run beside):
        the router then exits with "cannot listen on" and is started again on another port.
        Raises AssertionError, with every replica's log, if it exits otherwise or is not ready
        within `ready`."""
        replica = self.replicas[i]
        assert not replica.running, f"{replica.name} is already running"
        for _ in range(PORT_TRIES):
            logged = replica.log.stat().st_size if replica.log.exists() else 0
            replica.proc = self._exec(replica)
            if await self._ready(replica, ready):
                return replica
            with open(replica.log, "rb") as log:
                log.seek(logged)
                if b"cannot listen on" not in log.read():
                    break
        raise AssertionError(f"{replica.name} did not become ready\n{self.logs()}")

    async def _ready(self, replica: Replica, bound: timedelta) -> bool:
        """Poll /readyz until 200 (True), or the process exited (False); AssertionError past
        the bound (the process is killed)."""
        assert replica.proc is not None
        deadline = time.monotonic() + bound.total_seconds()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while time.monotonic() < deadline:
                if replica.proc.poll() is not None:
                    return False
                try:
                    async with session.get(f"{replica.url}/readyz") as resp:
                        if resp.status == 200:
                            return True
                except (TimeoutError, aiohttp.ClientError):
                    pass
                await asyncio.sleep(0.05)
        await self.kill(self.replicas.index(replica))
        raise AssertionError(f"{replica.name}'s /readyz not 200 within {bound}\n{self.logs()}")

    async def kill(self, i: int) -> int:
        """SIGKILL replica `i` (resumed first if paused, so that it dies at once) and reap it;
        its exit status (-9, or how it had exited before)."""
        proc = self.replicas[i].proc
        assert proc is not None, f"{self.replicas[i].name} was never started"
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        return await asyncio.to_thread(proc.wait, STOP.total_seconds())

    async def stop(self, i: int) -> int:
        """SIGTERM replica `i` (a clean stop) and wait for its exit, SIGKILL after STOP; its
        exit status."""
        proc = self.replicas[i].proc
        assert proc is not None, f"{self.replicas[i].name} was never started"
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused process would not act on SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                return await asyncio.to_thread(proc.wait, STOP.total_seconds())
            except subprocess.TimeoutExpired:
                pass
        return await self.kill(i)

    def pause(self, i: int) -> None:
        """SIGSTOP replica `i`: its connections stay open but it does nothing (a replica cut
        off, or stalled, as far as the others and the database can tell)."""
        proc = self.replicas[i].proc
        assert proc is not None and proc.poll() is None, f"{self.replicas[i].name} not running"
        proc.send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        """SIGCONT replica `i`."""
        proc = self.replicas[i].proc
        assert proc is not None and proc.poll() is None, f"{self.replicas[i].name} not running"
        proc.send_signal(signal.SIGCONT)

    async def restart(self, i: int) -> Replica:
        """SIGKILL replica `i` if it runs, then start it again (a new port) and wait for it."""
        if self.replicas[i].running:
            await self.kill(i)
        return await self.start(i)

    def running(self) -> list[Replica]:
        """The replicas whose process is alive."""
        return [r for r in self.replicas if r.running]

    def logs(self, lines: int = 30) -> str:
        """The end of every replica's log, for a failure message."""
        return "\n".join(r.tail(lines) for r in self.replicas)

    async def aclose(self) -> None:
        """Stop every replica still running (SIGTERM, then SIGKILL after STOP)."""
        await asyncio.gather(
            *(self.stop(i) for i, r in enumerate(self.replicas) if r.proc is not None)
        )

    async def wait_for(
        self,
        condition: Callable[[], object] | Callable[[], Awaitable[object]],
        what: str,
        bound: timedelta,
        every: timedelta = timedelta(seconds=0.05),
    ) -> Any:
        """Call `condition` (sync or async) every `every` until it returns something true, and
        return that; AssertionError naming `what`, with every replica's log, past `bound`."""
        deadline = time.monotonic() + bound.total_seconds()
        while True:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {bound}\n{self.logs()}")
            await asyncio.sleep(every.total_seconds())


@dataclass
class Accepted:
    """A webhook a replica answered 200: which one, and its answer's correlation id."""

    replica: str
    correlation_id: str


@dataclass
class RoundRobin:
    """Posts to the replicas in turn (a load balancer in front of them); skips a replica that
    does not answer (connection refused, timeout) or answers 503, as a balancer's health check
    would."""

    replicas: Replicas
    session: aiohttp.ClientSession
    timeout: timedelta = timedelta(seconds=10)
    _next: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (replica, why)

    def _turn(self) -> list[Replica]:
        """Every replica once, starting at the next one's turn (which then moves on)."""
        n = len(self.replicas)
        order = [self.replicas[(self._next + k) % n] for k in range(n)]
        self._next = (self._next + 1) % n
        return order

    async def post(self, body: bytes, headers: dict[str, str] = HEADERS) -> Accepted:
        """POST /webhook to the replica whose turn it is, or the next that answers 200.

        Raises AssertionError if no replica accepted it (each one's answer in the message)."""
        timeout = aiohttp.ClientTimeout(total=self.timeout.total_seconds())
        for replica in self._turn():
            if not replica.running:
                continue
            try:
                async with self.session.post(
                    f"{replica.url}/webhook", data=body, headers=headers, timeout=timeout
                ) as resp:
                    text = await resp.read()
                    if resp.status == 200:
                        return Accepted(replica.name, orjson.loads(text)["correlation_id"])
                    why = f"{resp.status} {text[:200]!r}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                why = repr(exc)
            self.skipped.append((replica.name, why))
        raise AssertionError(
            f"no replica accepted the webhook: {self.skipped[-len(self.replicas) :]}"
        )

    async def get_json(self, path: str) -> Any:
        """GET `path` (with the bearer token) from the replica whose turn it is, or the next
        that answers 200; its JSON."""
        for replica in self._turn():
            if not replica.running:
                continue
            try:
                async with self.session.get(f"{replica.url}{path}", headers=HEADERS) as resp:
                    if resp.status == 200:
                        return await resp.json()
            except (TimeoutError, aiohttp.ClientError):
                pass
        raise AssertionError(f"no replica answered GET {path}\n{self.replicas.logs()}")
