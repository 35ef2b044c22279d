"""alert-router benchmark: measures issue 16's floors in one run and prints each, met or not.

Run: `make bench` (or `python bench/bench.py`); `--quick` for a short smoke run (shorter
phases and smaller counts than the floors name, so its verdicts are indicative only);
`--json FILE` also writes every figure. The router runs as its own process
(`python -m router serve`, SQLite durable store, JSON logs at info level to /dev/null), each
phase on a fresh store, beside a PagerDuty-shaped sink that accepts every event at once. The
load generator and the sink share the machine's cores with the router.

Phases (every wait is bounded):
  1. intake capacity: 10-alert payloads, each a new group, at full speed; the same load
     against a bare aiohttp handler (reads the body, answers 200); the ratio of the two.
  2. sustained intake: 10-alert payloads, each a new incident, at a constant rate a little
     above 1,000/s for 30 s: accepted/s, 503s, webhook latency, the peak inbox backlog; then
     the rate at which the sink received them all (planned, queued, delivered).
  3. latency at a steady 300 new incidents/s: webhook p50/p99, and end to end (webhook sent
     -> sink received the event) p50/p99.
  4. bytes written to disk (WAL + database) per new 10-alert incident delivered once and
     resolved once: the router's write_bytes in /proc/<pid>/io over the phase.
  5. idle RSS with every channel and chat-op configured (fakes and placeholder tokens).
  6. 100,000 firing alerts (10,000 incidents): RSS per 10,000 firing alerts, and the start-up
     time with them in the store, from exec to /readyz answering 200.
  7. storm: 10,000 alerts in 200 groups towards one Telegram chat with flood control.
  8. replicas (issue 17): one process on SQLite, then one, two and three replicas on one
     PostgreSQL database (a server of its own, started as tests/postgres.py starts it), the
     load spread over the replicas: accepted/s at full speed, new incidents planned and
     delivered/s, end to end p50/p99 at a steady 300/s, and notifications the sink got twice
     (--quick: SQLite and three replicas on PostgreSQL only).
Load comes from wrk (Debian package `wrk`, a C load generator that leaves the CPU to the
router) when it is installed, with a Lua script that sends at a constant rate; otherwise, and
for the latency phase (which needs each payload's send time), from a Python generator.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.telegram import FakeTelegram  # noqa: E402  (the faithful fake of the suite)
from tests.postgres import PostgresServer  # noqa: E402  (Debian's PostgreSQL, as the suite runs it)
from tests.postgres import binaries as postgres_binaries  # noqa: E402
from tests.replicas import Replicas  # noqa: E402  (several serve processes on one store)

TOKEN = "bench-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
MIB = 1024 * 1024

# The floors of issue 16 ("Floors, measured by make bench").
WORST_BURST_PER_S = 10_000 / 30  # 10,000 groups firing within one group_wait of 30 s
FLOOR_ACCEPTED_PER_S = max(1_000.0, 3 * WORST_BURST_PER_S)
FLOOR_DELIVERED_PER_S = 500.0
STEADY_RATE_PER_S = 300.0
FLOOR_WEBHOOK_P99 = timedelta(milliseconds=25)
FLOOR_E2E_P99 = timedelta(milliseconds=100)
TARGET_BYTES_PER_INCIDENT = 16 * 1024
FLOOR_IDLE_RSS_MIB = 80.0
DEFAULT_MAX_BACKLOG = 10_000  # server.max_backlog's default, for the backlog verdict


@dataclass(frozen=True)
class Sizes:
    """How long and how much each phase runs (the full run, or --quick)."""

    capacity: timedelta
    sustained: timedelta
    steady: timedelta
    disk_incidents: int
    many_incidents: int  # of 10 alerts each
    storm_groups: int
    replica_setups: tuple[tuple[str, int], ...]  # (engine, replicas) of the replicas phase


FULL = Sizes(
    capacity=timedelta(seconds=10),
    sustained=timedelta(seconds=30),
    steady=timedelta(seconds=20),
    disk_incidents=2_000,
    many_incidents=10_000,
    storm_groups=200,
    replica_setups=(("sqlite", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 3)),
)
QUICK = Sizes(
    capacity=timedelta(seconds=1),
    sustained=timedelta(seconds=3),
    steady=timedelta(seconds=2),
    disk_incidents=100,
    many_incidents=500,
    storm_groups=20,
    replica_setups=(("sqlite", 1), ("postgresql", 3)),
)
SUSTAINED_ASKED_PER_S = 1.05 * FLOOR_ACCEPTED_PER_S  # a constant schedule ends a little short
BOUND = timedelta(seconds=300)  # the longest any phase waits for planning and delivery

BARE = """
import sys
from aiohttp import web
async def hook(request):
    await request.read()
    return web.Response(text="ok")
app = web.Application(client_max_size=8 * 1024 * 1024)
app.router.add_post("/webhook", hook)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    """A TCP port free on loopback right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def payload(n_alerts: int, group: str, resolved: bool = False) -> bytes:
    """An Alertmanager v4 webhook body: `n_alerts` alerts of one group, firing or resolved."""
    alerts = [
        {
            "status": "resolved" if resolved else "firing",
            "labels": {
                "alertname": "BenchAlert",
                "group": group,
                "instance": f"host-{i}:9100",
                "severity": "critical",
                "service": "bench",
                "job": "node",
            },
            "annotations": {"summary": f"bench alert {i} of {group}", "description": "x" * 80},
            "startsAt": "2026-11-23T06:00:00Z",
            "endsAt": "2026-11-23T06:05:00Z" if resolved else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": hashlib.blake2b(group.encode(), digest_size=6).hexdigest() + f"{i:04x}",
        }
        for i in range(n_alerts)
    ]
    return orjson.dumps(
        {
            "version": "4",
            "receiver": "bench",
            "status": "resolved" if resolved else "firing",
            "alerts": alerts,
            "groupLabels": {"group": group},
            "commonLabels": {"alertname": "BenchAlert", "group": group},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "groupKey": f'{{}}:{{group="{group}"}}',
            "truncatedAlerts": 0,
        }
    )


def proc_status_mib(pid: int, key: str) -> float:
    """A memory figure of /proc/<pid>/status (VmRSS: now, VmHWM: peak), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def written_bytes(pid: int) -> int:
    """Bytes the process caused to be written to storage so far: write_bytes less
    cancelled_write_bytes (dirty pages of files truncated before they reached the disk), from
    /proc/<pid>/io."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(io["write_bytes"]) - int(io["cancelled_write_bytes"])


def state_files(folder: Path) -> dict[str, int]:
    """The store's files in `folder` (database, WAL, shared memory) and their sizes in bytes."""
    return {path.name: path.stat().st_size for path in folder.glob("state.db*")}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process used so far (/proc/<pid>/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`; NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


# ------------------------------------------------------------------------------ processes


class Sink:
    """A PagerDuty-shaped endpoint that accepts at once and notes when each group's first
    trigger and first resolve arrived (time.time(), seconds)."""

    def __init__(self) -> None:
        self.triggered: dict[str, float] = {}
        self.resolved: dict[str, float] = {}
        self.groups: dict[str, str] = {}  # dedup_key -> group, from the triggers
        self.events = 0

    async def enqueue(self, request: web.Request) -> web.Response:
        """POST /v2/enqueue: note the event; 202 as PagerDuty answers."""
        body = orjson.loads(await request.read())
        self.events += 1
        key = body["dedup_key"]
        if body["event_action"] == "trigger":
            group = body["payload"]["custom_details"]["firing"][0]["labels"]["group"]
            self.groups.setdefault(key, group)
            self.triggered.setdefault(group, time.time())
        elif body["event_action"] == "resolve" and key in self.groups:
            self.resolved.setdefault(self.groups[key], time.time())
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": key}, status=202
        )

    def app(self) -> web.Application:
        """The aiohttp app serving the sink."""
        app = web.Application(client_max_size=8 * MIB)
        app.router.add_post("/v2/enqueue", self.enqueue)
        return app


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve `app` on a free loopback port: (its runner, the port)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


@dataclass
class Router:
    """A running `alert-router serve` and where it listens."""

    proc: subprocess.Popen[bytes]
    port: int
    config: Path

    @property
    def url(self) -> str:
        """The base URL, http://127.0.0.1:<port>."""
        return f"http://127.0.0.1:{self.port}"


def write_config(workdir: Path, receivers: str, extra: str = "") -> tuple[Path, int]:
    """routes.yaml for a bench router in `workdir`: (its path, the port it listens on).

    max_backlog is raised above anything a phase sends, so that a burst measures intake, not
    that policy (503 once the backlog is full, tested in tests/test_intake.py); the sustained
    phase reports its peak backlog against the default instead.
    """
    port = free_port()
    config = workdir / "routes.yaml"
    config.write_text(f"""
server:
  listen: "127.0.0.1:{port}"
  auth: {{bearer_token: {TOKEN}}}
  max_body_bytes: 8388608
  max_backlog: 1000000
storage: {{path: "{workdir / "state.db"}"}}
delivery: {{storm_threshold: 10}}
receivers:
{receivers}
route: {{receiver: bench}}
{extra}
""")
    return config, port


def exec_router(config: Path) -> subprocess.Popen[bytes]:
    """Start `python -m router serve` on `config` (logs as JSON at info level, discarded)."""
    return subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(config), "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )


async def wait_ready(router: Router, bound: timedelta = timedelta(seconds=120)) -> None:
    """Poll /readyz every 10 ms until it answers 200; exit with the reason if the router
    exited or the bound passed (its config is checked again to say why)."""
    deadline = time.monotonic() + bound.total_seconds()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if router.proc.poll() is not None:
                check = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "router", "check-config", str(router.config)],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                )
                raise SystemExit(
                    f"the router exited with {router.proc.returncode}: {check.stdout}{check.stderr}"
                )
            try:
                async with session.get(f"{router.url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)
    raise SystemExit(f"{router.url}/readyz not ready within {bound}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait for the exit (SIGKILL after 30 s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pagerduty_receivers(sink_port: int) -> str:
    """The `receivers:` entries of a router paging the sink."""
    return f"""  - name: bench
    pagerduty_configs: [{{routing_key: R0UTINGKEY0000000000000000000000, url: "http://127.0.0.1:{sink_port}/v2/enqueue"}}]"""


@asynccontextmanager
async def sink_and_router(workdir: Path | None = None) -> AsyncIterator[tuple[Router, Sink]]:
    """A fresh router (its own store) paging a fresh sink; both stopped when left."""
    sink = Sink()
    runner, sink_port = await serve(sink.app())
    with tempfile.TemporaryDirectory(prefix="alert-router-bench-") as tmp:
        config, port = write_config(Path(workdir or tmp), pagerduty_receivers(sink_port))
        router = Router(exec_router(config), port, config)
        try:
            await wait_ready(router)
            yield router, sink
        finally:
            stop(router.proc)
            await runner.cleanup()


def exec_bare(port: int) -> subprocess.Popen[bytes]:
    """Start the bare aiohttp handler on `port`."""
    return subprocess.Popen(
        [sys.executable, "-c", BARE, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@asynccontextmanager
async def bare_handler() -> AsyncIterator[str]:
    """A bare aiohttp server (reads the body, answers 200) in a process of its own: its URL."""
    port = free_port()
    proc = exec_bare(port)
    url = f"http://127.0.0.1:{port}/webhook"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(1000):  # bounded: 10 s
                try:
                    async with session.post(url, data=b"{}") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.01)
        yield url
    finally:
        stop(proc)


async def scrape(router: Router, session: aiohttp.ClientSession) -> dict[str, float]:
    """The router's /metrics samples without labels, by name."""
    async with session.get(f"{router.url}/metrics") as resp:
        text = await resp.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def settled(router: Router, session: aiohttp.ClientSession) -> dict[str, float]:
    """Poll /metrics every 0.25 s until nothing waits to be planned and nothing is queued or
    being sent (bounded by BOUND); the last scrape."""
    deadline = time.monotonic() + BOUND.total_seconds()
    while True:
        metrics = await scrape(router, session)
        idle = (
            metrics.get("alert_router_intake_backlog") == 0
            and metrics.get("alert_router_outbox_depth") == 0
        )
        if idle or time.monotonic() > deadline:
            return metrics
        await asyncio.sleep(0.25)


async def until(
    check: Callable[[], bool], bound: timedelta = BOUND, every: timedelta = timedelta(seconds=0.05)
) -> bool:
    """Wait until check() holds (True) or the bound passes (False)."""
    deadline = time.monotonic() + bound.total_seconds()
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every.total_seconds())
    return True


# ------------------------------------------------------------------------------ load


WRK_SCRIPT = """
-- 10-alert payloads, each a new group named <prefix>-<n>.
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  counter = counter + 1
  local g = "%(prefix)s-" .. counter
  local alerts = {}
  for i = 0, 9 do
    alerts[#alerts + 1] = string.format(
      '{"status":"firing","labels":{"alertname":"BenchAlert","group":"%%s","instance":"host-%%d:9100","severity":"critical","service":"bench","job":"node"},"annotations":{"summary":"bench alert %%d of %%s","description":"%%s"},"startsAt":"2026-11-23T06:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph","fingerprint":"%%08x%%08x"}',
      g, i, i, g, string.rep("x", 80), counter, i)
  end
  local body = string.format(
    '{"version":"4","receiver":"bench","status":"firing","alerts":[%%s],"groupLabels":{"group":"%%s"},"commonLabels":{"alertname":"BenchAlert","group":"%%s"},"commonAnnotations":{},"externalURL":"http://alertmanager:9093","groupKey":"{}:{group=\\\\"%%s\\\\"}","truncatedAlerts":0}',
    table.concat(alerts, ","), g, g, g)
  return wrk.format(nil, nil, nil, body)
end

-- rate > 0: a constant schedule, request k due at start + k / rate (each connection takes the
-- next slot and waits for it; a late slot is sent at once). rate 0: full speed.
local rate = %(rate)f
if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock, bench_timespec *ts);
  ]]
  local ts = ffi.new("bench_timespec")
  local start, slot = nil, 0
  delay = function()
    ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
    local now = tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
    start = start or now
    local due = start + slot * 1000 / rate
    slot = slot + 1
    if due > now then return math.floor(due - now) end
    return 0
  end
end

statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local parts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      parts[#parts + 1] = status .. "=" .. n
    end
  end
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%s\\n", summary.requests,
    summary.duration, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), table.concat(parts, ",")))
end
"""


@dataclass
class Load:
    """What a load run measured: answers by status, socket errors, webhook latencies."""

    generator: str
    seconds: float
    statuses: dict[int, int]
    socket_errors: int
    p50_ms: float
    p99_ms: float
    p999_ms: float = math.nan
    sent_at: dict[str, float] = field(default_factory=dict)  # group -> time.time() sent

    @property
    def accepted(self) -> int:
        """Payloads answered 200."""
        return self.statuses.get(200, 0)

    @property
    def accepted_per_s(self) -> float:
        """Payloads answered 200 per second of the run."""
        return self.accepted / self.seconds

    def figures(self) -> dict[str, Any]:
        """The figures, for --json."""
        return {
            "generator": self.generator,
            "seconds": self.seconds,
            "accepted": self.accepted,
            "accepted_per_s": self.accepted_per_s,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "socket_errors": self.socket_errors,
            "webhook_p50_ms": self.p50_ms,
            "webhook_p99_ms": self.p99_ms,
            "webhook_p999_ms": self.p999_ms,
        }


def have_wrk() -> bool:
    """Whether wrk is on PATH."""
    return shutil.which("wrk") is not None


async def wrk_load(
    url: str, connections: int, duration: timedelta, prefix: str, rate: float = 0.0
) -> Load:
    """10-alert payloads, each a new group `<prefix>-<n>`, from wrk (one thread): at full speed
    (rate 0) or on a constant schedule of `rate`/s."""
    script = WRK_SCRIPT % {"token": TOKEN, "prefix": prefix, "rate": rate}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        proc = await asyncio.create_subprocess_exec(
            "wrk", "-t1", f"-c{connections}", f"-d{int(duration.total_seconds())}s",
            "--timeout", "10s", "-s", file.name, url, stdout=subprocess.PIPE,
        )  # fmt: skip
        out = (await proc.communicate())[0].decode()
    finally:
        os.unlink(file.name)
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    _requests, duration_us, errors, p50, p99, p999, *rest = line.split()[1:]
    statuses = {
        int(status): int(n)
        for status, n in (part.split("=") for part in "".join(rest).split(",") if part)
    }
    return Load(
        generator="wrk",
        seconds=int(duration_us) / 1e6,
        statuses=statuses,
        socket_errors=int(errors),
        p50_ms=int(p50) / 1000,
        p99_ms=int(p99) / 1000,
        p999_ms=int(p999) / 1000,
    )


async def python_load(
    url: str,
    bodies: list[tuple[str, bytes]],
    concurrency: int = 16,
    rate: float | None = None,
) -> Load:
    """POST each (group, body) from this process (aiohttp): `concurrency` at a time, or each
    at its slot of a constant `rate`/s schedule (open loop: a slow answer delays no other)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent_at: dict[str, float] = {}
    errors = 0

    async def one(session: aiohttp.ClientSession, group: str, body: bytes) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        sent_at[group] = time.time()
        try:
            async with session.post(url, data=body, headers=HEADERS) as resp:
                await resp.read()
        except aiohttp.ClientError:
            errors += 1
            return
        latencies.append(time.perf_counter() - t0)
        statuses[resp.status] = statuses.get(resp.status, 0) + 1

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if rate is None:
            queue = iter(bodies)

            async def worker() -> None:
                for group, body in queue:
                    await one(session, group, body)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            tasks = []
            for k, (group, body) in enumerate(bodies):
                delay = started + k / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(session, group, body)))
            await asyncio.gather(*tasks)
    return Load(
        generator="python",
        seconds=time.perf_counter() - started,
        statuses=statuses,
        socket_errors=errors,
        p50_ms=pct(latencies, 50) * 1000,
        p99_ms=pct(latencies, 99) * 1000,
        p999_ms=pct(latencies, 99.9) * 1000,
        sent_at=sent_at,
    )


def bodies(prefix: str, count: int, resolved: bool = False) -> list[tuple[str, bytes]]:
    """`count` 10-alert payloads of the groups <prefix>-1 ... <prefix>-<count>."""
    return [(f"{prefix}-{n}", payload(10, f"{prefix}-{n}", resolved)) for n in range(1, count + 1)]


async def intake_load(
    url: str, duration: timedelta, prefix: str, rate: float = 0.0, connections: int = 16
) -> Load:
    """10-alert payloads of new groups for `duration`, at full speed or `rate`/s: from wrk if
    installed, else from this process."""
    if have_wrk():
        return await wrk_load(url, connections, duration, prefix, rate)
    seconds = duration.total_seconds()
    count = int((rate or 1_500) * seconds)  # full speed: about what this generator reaches
    work = bodies(prefix, count)
    if rate:
        return await python_load(url, work, rate=rate)
    return await python_load(url, work, concurrency=connections)


# ------------------------------------------------------------------------------ phases


def report(line: str) -> None:
    """Print one line of the report at once (the run takes minutes)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def verdict(met: bool) -> str:
    """'met' or 'NOT MET'."""
    return "met" if met else "NOT MET"


async def phase_capacity(sizes: Sizes) -> dict[str, Any]:
    """Accepted 10-alert payloads/s at full speed, the bare handler's, and the ratio."""
    async with sink_and_router() as (router, _sink):
        r = await intake_load(f"{router.url}/webhook", sizes.capacity, "cap", connections=16)
    async with bare_handler() as url:
        b = await intake_load(url, sizes.capacity, "bare", connections=16)
    ratio = r.accepted_per_s / b.accepted_per_s
    refused = sum(n for status, n in r.statuses.items() if status != 200)
    report(
        f"intake capacity ({r.generator}, 16 connections, {sizes.capacity.total_seconds():.0f} s,"
        f" each payload a new incident): {r.accepted_per_s:,.0f} payloads/s accepted"
        f" (p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, non-200 {refused},"
        f" socket errors {r.socket_errors}); bare aiohttp handler {b.accepted_per_s:,.0f}/s;"
        f" ratio {ratio:.2f}",
    )
    return {"router": r.figures(), "bare": b.figures(), "ratio_to_bare": ratio}


async def phase_sustained(sizes: Sizes) -> dict[str, Any]:
    """A constant rate a little above the floor for `sizes.sustained`: accepted/s, 503s,
    latency, peak backlog; then how fast the sink received every accepted payload's event."""
    async with sink_and_router() as (router, sink), aiohttp.ClientSession() as session:
        peak_backlog = 0.0
        sampling = True

        async def sample() -> None:
            nonlocal peak_backlog
            while sampling:
                metrics = await scrape(router, session)
                peak_backlog = max(peak_backlog, metrics.get("alert_router_intake_backlog", 0))
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample())
        cpu0, first_send = cpu_seconds(router.proc.pid), time.time()
        load = await intake_load(
            f"{router.url}/webhook",
            sizes.sustained,
            "sus",
            rate=SUSTAINED_ASKED_PER_S,
            connections=64,
        )
        sent_end = time.time()
        await until(lambda: len(sink.triggered) >= load.accepted)
        sampling = False
        await sampler
        # wrk does not count the answers still on their way when it stops: the router does.
        received = (await settled(router, session))["alert_router_payloads_received_total"]
        complete = len(sink.triggered) >= received
        cpu = cpu_seconds(router.proc.pid) - cpu0
        arrivals = sorted(sink.triggered.values())
        last = arrivals[-1] if arrivals else math.nan
        delivered_per_s = len(arrivals) / (last - first_send)
        after_intake = [t for t in arrivals if t > sent_end]
        drain_per_s = len(after_intake) / (last - sent_end) if len(after_intake) > 100 else math.nan
        peak_rss = proc_status_mib(router.proc.pid, "VmHWM")
    refused = load.statuses.get(503, 0)
    figures = {
        "asked_per_s": SUSTAINED_ASKED_PER_S,
        **load.figures(),
        "answered_503": refused,
        "received_by_router": received,
        "peak_backlog": peak_backlog,
        "delivered": len(arrivals),
        "all_delivered": complete,
        "delivered_per_s": delivered_per_s,
        "delivered_per_s_after_intake": drain_per_s,
        "router_cpu_ms_per_incident": 1000 * cpu / max(1, len(arrivals)),
        "peak_rss_mib": peak_rss,
    }
    others = sum(n for s, n in load.statuses.items() if s not in (200, 503)) + load.socket_errors
    report(
        f"sustained intake ({load.generator}, constant {SUSTAINED_ASKED_PER_S:,.0f}/s asked,"
        f" 64 connections, {load.seconds:.0f} s): {load.accepted_per_s:,.0f} payloads/s"
        f" accepted, 503 {refused} times, other failures {others}; webhook p50"
        f" {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms; peak backlog {peak_backlog:,.0f}"
        f" payloads (the default server.max_backlog is {DEFAULT_MAX_BACKLOG:,})",
    )
    report(
        f"planned and delivered: {len(arrivals):,} of {received:,.0f} new incidents at"
        f" {delivered_per_s:,.0f}/s (first send to the sink's last receipt),"
        f" {drain_per_s:,.0f}/s once intake had stopped; router CPU"
        f" {figures['router_cpu_ms_per_incident']:.2f} ms per incident",
    )
    return figures


async def phase_steady(sizes: Sizes) -> dict[str, Any]:
    """Webhook and end-to-end latency at a steady STEADY_RATE_PER_S new incidents/s."""
    count = int(STEADY_RATE_PER_S * sizes.steady.total_seconds())
    async with sink_and_router() as (router, sink):
        load = await python_load(
            f"{router.url}/webhook", bodies("steady", count), rate=STEADY_RATE_PER_S
        )
        await until(lambda: len(sink.triggered) >= load.accepted)
        e2e = [sink.triggered[g] - t for g, t in load.sent_at.items() if g in sink.triggered]
    figures = {
        "rate_per_s": STEADY_RATE_PER_S,
        **load.figures(),
        "e2e_measured": len(e2e),
        "e2e_p50_ms": pct(e2e, 50) * 1000,
        "e2e_p99_ms": pct(e2e, 99) * 1000,
    }
    report(
        f"steady {STEADY_RATE_PER_S:.0f} new incidents/s (python generator, {load.seconds:.0f} s,"
        f" {load.accepted:,} accepted, {load.socket_errors} errors): webhook p50"
        f" {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms; end to end p50"
        f" {figures['e2e_p50_ms']:.1f} ms, p99 {figures['e2e_p99_ms']:.1f} ms"
        f" ({len(e2e):,} deliveries)",
    )
    return figures


async def phase_disk(sizes: Sizes) -> dict[str, Any]:
    """Bytes the router writes per new 10-alert incident delivered once and resolved once."""
    n = sizes.disk_incidents
    async with sink_and_router() as (router, sink), aiohttp.ClientSession() as session:
        pid = router.proc.pid
        before = written_bytes(pid)
        fired = await python_load(f"{router.url}/webhook", bodies("disk", n), concurrency=8)
        await until(lambda: len(sink.triggered) >= fired.accepted)
        ended = await python_load(
            f"{router.url}/webhook", bodies("disk", n, resolved=True), concurrency=8
        )
        await until(lambda: len(sink.resolved) >= ended.accepted)

        await settled(router, session)
        written = written_bytes(pid) - before
        files = state_files(router.config.parent)
    per = written / max(1, len(sink.resolved))
    figures = {
        "incidents": n,
        "triggered": len(sink.triggered),
        "resolved": len(sink.resolved),
        "write_bytes": written,
        "bytes_per_incident": per,
        "files_at_end": files,
    }
    report(
        f"disk: {per / 1024:,.1f} KiB written per new 10-alert incident delivered once and"
        f" resolved once ({written / MIB:,.1f} MiB for {len(sink.resolved):,}; the router's"
        f" write_bytes in /proc/<pid>/io, WAL and database together)",
    )
    return figures


ALL_CHANNELS = """  - name: bench
    telegram_configs: [{{bot_token: "123456:placeholder-token", chat_id: -1001234567890, api_url: "{telegram}"}}]
    slack_configs: [{{bot_token: xoxb-placeholder, channel: "#alerts", api_url: "{sink}/slack/api/"}}]
    email_configs: [{{to: oncall@example.com, from: alert-router@example.com, smarthost: "127.0.0.1:{smtp}", require_tls: false}}]
    pagerduty_configs: [{{routing_key: R0UTINGKEY0000000000000000000000, url: "{sink}/v2/enqueue"}}]"""
CHATOPS = """chatops:
  alertmanager_url: http://127.0.0.1:{am}
  telegram:
    bot_token: "123456:placeholder-token"
    api_url: "{telegram}"
    mode: polling
    webhook_secret: placeholder-webhook-secret
    allowed_chats: [-1001234567890]
  slack:
    signing_secret: placeholder-signing-secret
    team_id: T0123456789
    allowed_channels: [C0123ALERTS]
"""


async def phase_idle_memory(sizes: Sizes) -> dict[str, Any]:
    """RSS of an idle router with every channel and both chat-ops configured (the same
    measurement in both sizes)."""
    telegram = FakeTelegram(tokens={"123456:placeholder-token"})
    tg_runner, tg_port = await serve(telegram.app())
    sink = Sink()
    sink_runner, sink_port = await serve(sink.app())
    try:
        with tempfile.TemporaryDirectory(prefix="alert-router-bench-") as tmp:
            urls = {
                "telegram": f"http://127.0.0.1:{tg_port}",
                "sink": f"http://127.0.0.1:{sink_port}",
                "smtp": free_port(),
                "am": free_port(),
            }
            config, port = write_config(
                Path(tmp), ALL_CHANNELS.format(**urls), CHATOPS.format(**urls)
            )
            router = Router(exec_router(config), port, config)
            try:
                await wait_ready(router)
                # Chat-ops has connected once the bot has asked Telegram for updates.
                await until(lambda: bool(telegram.sent("getUpdates")), timedelta(seconds=30))
                await asyncio.sleep(2.0)  # idle: nothing is measured as not happening here
                rss = proc_status_mib(router.proc.pid, "VmRSS")
            finally:
                stop(router.proc)
    finally:
        await tg_runner.cleanup()
        await sink_runner.cleanup()
    report(
        f"idle RSS with every channel (Telegram, Slack, email, PagerDuty) and chat-ops"
        f" (Telegram polling, Slack) configured: {rss:.1f} MiB",
    )
    return {"idle_rss_all_channels_mib": rss}


async def phase_many_alerts(sizes: Sizes) -> dict[str, Any]:
    """RSS per 10,000 firing alerts, and the start-up time with them all in the store."""
    incidents = sizes.many_incidents
    alerts = incidents * 10
    with tempfile.TemporaryDirectory(prefix="alert-router-bench-") as tmp:
        async with sink_and_router(Path(tmp)) as (router, sink):
            await asyncio.sleep(1.0)
            empty_rss = proc_status_mib(router.proc.pid, "VmRSS")
            load = await python_load(
                f"{router.url}/webhook", bodies("many", incidents), concurrency=16
            )
            await until(lambda: len(sink.triggered) >= load.accepted)
            loaded_rss = proc_status_mib(router.proc.pid, "VmRSS")
            peak_rss = proc_status_mib(router.proc.pid, "VmHWM")
        started = time.perf_counter()
        again = Router(exec_router(router.config), router.port, router.config)
        try:
            await wait_ready(again)
            startup_s = time.perf_counter() - started
            await asyncio.sleep(2.0)
            restarted_rss = proc_status_mib(again.proc.pid, "VmRSS")
        finally:
            stop(again.proc)
    per_10k = (restarted_rss - empty_rss) / (alerts / 10_000)
    figures = {
        "firing_alerts": alerts,
        "accepted": load.accepted,
        "delivered": len(sink.triggered),
        "empty_rss_mib": empty_rss,
        "loaded_rss_mib": loaded_rss,
        "peak_rss_mib": peak_rss,
        "restarted_rss_mib": restarted_rss,
        "rss_per_10k_firing_alerts_mib": per_10k,
        "startup_s": startup_s,
    }
    report(
        f"{alerts:,} firing alerts ({incidents:,} incidents): RSS {empty_rss:.1f} MiB empty,"
        f" {loaded_rss:.1f} MiB after taking them in (peak {peak_rss:.1f} MiB),"
        f" {restarted_rss:.1f} MiB restarted with them: {per_10k:.1f} MiB per 10,000 firing"
        f" alerts; start-up {startup_s:.2f} s from exec to /readyz ready",
    )
    return figures


async def phase_storm(sizes: Sizes) -> dict[str, Any]:
    """10,000 alerts (50 per group) towards one Telegram chat with flood control."""
    groups, per_group = sizes.storm_groups, 50
    fake = FakeTelegram()  # flood control on: 1 message/s per chat, 429 with retry_after beyond
    runner, tg_port = await serve(fake.app())
    try:
        with tempfile.TemporaryDirectory(prefix="alert-router-bench-") as tmp:
            receivers = f"""  - name: bench
    telegram_configs: [{{bot_token: "123456:good-token", chat_id: -1002, api_url: "http://127.0.0.1:{tg_port}"}}]"""
            config, port = write_config(Path(tmp), receivers)
            router = Router(exec_router(config), port, config)
            try:
                await wait_ready(router)
                started = time.perf_counter()
                work = [(f"storm-{g}", payload(per_group, f"storm-{g}")) for g in range(groups)]
                load = await python_load(f"{router.url}/webhook", work, concurrency=16)
                accepted_s = time.perf_counter() - started
                notes: list[dict[str, Any]] = []
                async with aiohttp.ClientSession() as s:
                    for _ in range(1200):  # bounded: 120 s
                        async with s.get(
                            f"{router.url}/api/v1/incidents?limit=10000", headers=HEADERS
                        ) as resp:
                            notes = [
                                n
                                for i in (await resp.json())["incidents"]
                                for n in i["notifications"]
                            ]
                        if notes and all(n["state"] in ("sent", "dead") for n in notes):
                            break
                        await asyncio.sleep(0.1)
                done_s = time.perf_counter() - started
            finally:
                stop(router.proc)
    finally:
        await runner.cleanup()
    figures = {
        "alerts": groups * per_group,
        "groups": groups,
        "accepted": load.accepted,
        "all_accepted_s": accepted_s,
        "last_delivered_s": done_s,
        "telegram_messages": len(fake.messages),
        "digests": sum("incidents at once" in m.text for m in fake.messages.values()),
        "notifications_sent": sum(n["state"] == "sent" for n in notes),
        "dead": sum(n["state"] == "dead" for n in notes),
        "telegram_429s": len(fake.sent()) - len(fake.messages),
    }
    report(
        f"storm: {figures['alerts']:,} alerts in {groups} groups accepted in {accepted_s:.1f} s;"
        f" last notification delivered at {done_s:.1f} s; {figures['telegram_messages']}"
        f" Telegram messages ({figures['digests']} digests) for"
        f" {figures['notifications_sent']} notifications, {figures['dead']} dead; Telegram"
        f" answered 429 {figures['telegram_429s']} time(s)",
    )
    return figures


# ------------------------------------------------------------------------------ replicas


def replicas_config(storage: str, sink_port: int) -> str:
    """routes.yaml for the replicas phase (no server.listen: each replica gets --listen);
    `storage` is the YAML of the storage mapping. max_backlog raised as in write_config."""
    return f"""
server:
  auth: {{bearer_token: {TOKEN}}}
  max_body_bytes: 8388608
  max_backlog: 1000000
storage: {storage}
delivery: {{storm_threshold: 10}}
receivers:
{pagerduty_receivers(sink_port)}
route: {{receiver: bench}}
"""


async def received_by(replicas: Replicas, session: aiohttp.ClientSession) -> float:
    """Payloads the replicas committed to the inbox, all together (their /metrics)."""
    total = 0.0
    for r in replicas.replicas:
        assert r.proc is not None
        metrics = await scrape(Router(r.proc, r.port, replicas.config), session)
        total += metrics.get("alert_router_payloads_received_total", 0.0)
    return total


def arrivals(sink: Sink, prefix: str) -> list[float]:
    """When the sink received each group whose name starts with `prefix`, in order
    (time.time(), s)."""
    return sorted(t for g, t in sink.triggered.items() if g.startswith(prefix))


async def replica_setup(
    engine: str, count: int, sizes: Sizes, postgres: PostgresServer | None
) -> dict[str, Any]:
    """`count` replicas of serve on a fresh store of `engine` paging one sink, the load spread
    over them: intake at full speed (wrk, or the Python generator, one per replica, 16
    connections in all) and the rate at which its incidents were planned and delivered; then a
    steady STEADY_RATE_PER_S new incidents/s in all (the Python generator, one schedule per
    replica) for end to end latency (webhook sent -> sink received)."""
    sink = Sink()
    runner, sink_port = await serve(sink.app())
    try:
        with tempfile.TemporaryDirectory(prefix="alert-router-bench-") as tmp:
            folder = Path(tmp)
            if postgres is None:
                storage = f'{{path: "{folder / "state.db"}"}}'
            else:
                storage = f'{{url: "{await postgres.new_database()}"}}'
            config = replicas_config(storage, sink_port)
            setup = Replicas(folder, config, count, log_level="warning")
            async with setup as replicas, aiohttp.ClientSession() as session:
                urls = [f"{r.url}/webhook" for r in replicas.replicas]
                name = f"{engine}{count}"
                first_send = time.time()
                loads = await asyncio.gather(
                    *(
                        intake_load(url, sizes.capacity, f"{name}c{i}", connections=16 // count)
                        for i, url in enumerate(urls)
                    )
                )
                accepted = sum(load.accepted for load in loads)
                seconds = max(load.seconds for load in loads)
                await until(lambda: len(arrivals(sink, f"{name}c")) >= accepted)
                received = await received_by(replicas, session)
                complete = await until(lambda: len(arrivals(sink, f"{name}c")) >= received)
                fired = arrivals(sink, f"{name}c")
                delivered_per_s = len(fired) / (fired[-1] - first_send) if fired else math.nan

                per_replica = int(STEADY_RATE_PER_S * sizes.steady.total_seconds()) // count
                steady = await asyncio.gather(
                    *(
                        python_load(
                            url,
                            bodies(f"{name}s{i}", per_replica),
                            rate=STEADY_RATE_PER_S / count,
                        )
                        for i, url in enumerate(urls)
                    )
                )
                sent_at = {g: t for load in steady for g, t in load.sent_at.items()}
                steady_accepted = sum(load.accepted for load in steady)
                await until(lambda: len(arrivals(sink, f"{name}s")) >= steady_accepted)
                e2e = [sink.triggered[g] - t for g, t in sent_at.items() if g in sink.triggered]
    finally:
        await runner.cleanup()
    figures = {
        "engine": engine,
        "replicas": count,
        "generator": loads[0].generator,
        "accepted": accepted,
        "accepted_per_s": accepted / seconds,
        "refused": sum(n for load in loads for s, n in load.statuses.items() if s != 200),
        "received_by_routers": received,
        "delivered": len(fired),
        "all_delivered": complete,
        "delivered_per_s": delivered_per_s,
        "sent_twice": sink.events - len(sink.triggered),
        "steady_rate_per_s": STEADY_RATE_PER_S,
        "steady_accepted": steady_accepted,
        "webhook_p99_ms": max(load.p99_ms for load in steady),
        "e2e_measured": len(e2e),
        "e2e_p50_ms": pct(e2e, 50) * 1000,
        "e2e_p99_ms": pct(e2e, 99) * 1000,
    }
    report(
        f"  {engine}, {count} replica{'s' if count > 1 else ''}: {figures['accepted_per_s']:,.0f}"
        f" payloads/s accepted ({figures['refused']} refused); {delivered_per_s:,.0f} new"
        f" incidents/s planned and delivered ({len(fired):,} of {received:,.0f}); at"
        f" {STEADY_RATE_PER_S:.0f}/s end to end p50 {figures['e2e_p50_ms']:.1f} ms, p99"
        f" {figures['e2e_p99_ms']:.1f} ms ({len(e2e):,} of {steady_accepted:,} delivered),"
        f" webhook p99 {figures['webhook_p99_ms']:.1f} ms; sent twice {figures['sent_twice']}",
    )
    return figures


async def phase_replicas(sizes: Sizes) -> dict[str, Any]:
    """The setups of `sizes` in one run: one process on SQLite beside one, two and three
    replicas (--quick: three) on one PostgreSQL database (a server started as
    tests/postgres.py starts it: Debian's binaries, fsync off); skipped, and said so, without
    those binaries."""
    load_before = os.getloadavg()[0]
    report(
        f"replicas (load average {load_before:.2f} before; a machine shared with other work"
        f" gives noisy figures): {sizes.capacity.total_seconds():.0f} s at full speed, then"
        f" {STEADY_RATE_PER_S:.0f} new incidents/s for {sizes.steady.total_seconds():.0f} s",
    )
    bin_dir = postgres_binaries()
    postgres = None if bin_dir is None else PostgresServer(bin_dir)
    if postgres is not None:
        await asyncio.to_thread(postgres.start)
    try:
        setups = []
        for engine, count in sizes.replica_setups:
            if engine == "postgresql" and postgres is None:
                report(f"  {engine}, {count}: not measured (no PostgreSQL binaries: make deps)")
                continue
            setups.append(
                await replica_setup(engine, count, sizes, postgres if engine != "sqlite" else None)
            )
    finally:
        if postgres is not None:
            await asyncio.to_thread(postgres.stop)
    return {"load_average_before": load_before, "setups": setups}


PHASES: dict[str, Callable[[Sizes], Awaitable[dict[str, Any]]]] = {
    "capacity": phase_capacity,
    "sustained": phase_sustained,
    "steady": phase_steady,
    "disk": phase_disk,
    "idle_memory": phase_idle_memory,
    "many_alerts": phase_many_alerts,
    "storm": phase_storm,
    "replicas": phase_replicas,
}


def floors(f: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Each floor of issue 16: (what, met, the measured value)."""
    cap, sus, steady = f["capacity"], f["sustained"], f["steady"]
    disk, idle, many = f["disk"], f["idle_memory"], f["many_alerts"]
    seconds = sus["seconds"]
    return [
        (
            f"accepted >= {FLOOR_ACCEPTED_PER_S:,.0f} payloads/s (3x the worst burst of"
            f" {WORST_BURST_PER_S:.0f}/s) sustained for {seconds:.0f} s, zero 503",
            sus["accepted_per_s"] >= FLOOR_ACCEPTED_PER_S and sus["answered_503"] == 0,
            f"{sus['accepted_per_s']:,.0f}/s, {sus['answered_503']} 503s"
            f" (capacity {cap['router']['accepted_per_s']:,.0f}/s,"
            f" {cap['ratio_to_bare']:.2f} of the bare handler's)",
        ),
        (
            f"new incidents planned and delivered >= {FLOOR_DELIVERED_PER_S:.0f}/s",
            sus["delivered_per_s"] >= FLOOR_DELIVERED_PER_S and sus["all_delivered"],
            f"{sus['delivered_per_s']:,.0f}/s ({sus['delivered']:,} of"
            f" {sus['received_by_router']:,.0f})",
        ),
        (
            f"webhook p99 < {FLOOR_WEBHOOK_P99.total_seconds() * 1000:.0f} ms at"
            f" {STEADY_RATE_PER_S:.0f} new incidents/s",
            steady["webhook_p99_ms"] < FLOOR_WEBHOOK_P99.total_seconds() * 1000,
            f"{steady['webhook_p99_ms']:.1f} ms",
        ),
        (
            f"end-to-end p99 < {FLOOR_E2E_P99.total_seconds() * 1000:.0f} ms at"
            f" {STEADY_RATE_PER_S:.0f} new incidents/s",
            steady["e2e_p99_ms"] < FLOOR_E2E_P99.total_seconds() * 1000
            and steady["e2e_measured"] == steady["accepted"],
            f"{steady['e2e_p99_ms']:.1f} ms ({steady['e2e_measured']:,} of"
            f" {steady['accepted']:,} delivered)",
        ),
        (
            f"disk written per incident fired, delivered, resolved < {TARGET_BYTES_PER_INCIDENT // 1024} KiB (target)",
            disk["bytes_per_incident"] < TARGET_BYTES_PER_INCIDENT,
            f"{disk['bytes_per_incident'] / 1024:,.1f} KiB",
        ),
        (
            f"idle RSS, every channel configured < {FLOOR_IDLE_RSS_MIB:.0f} MiB",
            idle["idle_rss_all_channels_mib"] < FLOOR_IDLE_RSS_MIB,
            f"{idle['idle_rss_all_channels_mib']:.1f} MiB",
        ),
        (
            f"(reported) RSS per 10,000 firing alerts; start-up with {many['firing_alerts']:,}",
            True,
            f"{many['rss_per_10k_firing_alerts_mib']:.1f} MiB; {many['startup_s']:.2f} s",
        ),
    ]


async def main() -> None:
    """Run every phase, print the figures and the floors, write --json if asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="short phases and small counts (a smoke run)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(PHASES),
        help="run these phases only, without the floors' verdicts (to look into one figure)",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    report(
        f"alert-router benchmark{' (--quick)' if args.quick else ''} on {os.cpu_count()} cores,"
        f" Python {sys.version.split()[0]}, load from"
        f" {'wrk' if have_wrk() else 'the Python generator (wrk not installed)'}",
    )
    figures: dict[str, Any] = {"quick": args.quick, "cores": os.cpu_count()}
    for name, phase in PHASES.items():
        if not args.only or name in args.only:
            figures[name] = await phase(sizes)
    if not args.only:
        figures["floors"] = []
        report(
            "floors (issue 16)" + (": --quick runs are shorter and smaller" if args.quick else "")
        )
        for what, met, value in floors(figures):
            report(f"  {verdict(met):8} {what}: {value}")
            figures["floors"].append({"floor": what, "met": met, "measured": value})
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    asyncio.run(main())
