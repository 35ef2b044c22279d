"""alert-router benchmark: prints what it measures. Run: make bench (or python bench/bench.py).

Starts the router as its own process (SQLite durable store, JSON logs at info level) with a
PagerDuty-shaped sink that accepts every event at once, then:
  1. throughput: payloads of 1, 10 and 50 alerts, each a new incident (so each is also a
     delivery), at rising concurrency; accepted payloads/s (answered 200: committed to the
     inbox), alerts/s, webhook p50/p99; and the rate at which the sink received them all
     (planned, queued, delivered), from the first send to the last arrival;
  2. the same load against a bare aiohttp handler that only reads the body and answers 200;
  3. latency at a fixed rate, half the best accepted rate and half the best delivered rate of
     10-alert payloads: webhook p50/p99, and end to end from sending the webhook to the sink
     receiving the event, p50/p99;
  4. memory: RSS idle and peak of the router's process, its supervisor and its intake process,
     and their PSS (proportional set size: shared pages counted once), what they take together;
  6. with wrk installed (Debian package `wrk`, a load generator in C that leaves the CPU to the
     router): accepted payloads/s of 10 alerts at c=16 and c=64 for 5 s, router and bare.
  5. storm: 10,000 alerts in 200 groups towards a Telegram chat with flood control; time until
     the last notification or digest is delivered, and how many 429s Telegram answered.
All traffic is on loopback; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.telegram import FakeTelegram  # noqa: E402  (the faithful fake of the suite)

TOKEN = "bench-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
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
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def payload(n_alerts: int, group: str) -> bytes:
    now = "2026-11-23T06:00:00Z"
    alerts = [
        {
            "status": "firing",
            "labels": {
                "alertname": "BenchAlert",
                "group": group,
                "instance": f"host-{i}:9100",
                "severity": "critical",
                "service": "bench",
                "job": "node",
            },
            "annotations": {"summary": f"bench alert {i} of {group}", "description": "x" * 80},
            "startsAt": now,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": f"{abs(hash(group)) % 10**8:08d}{i:08x}",
        }
        for i in range(n_alerts)
    ]
    return orjson.dumps(
        {
            "version": "4",
            "receiver": "bench",
            "status": "firing",
            "alerts": alerts,
            "groupLabels": {"group": group},
            "commonLabels": {"alertname": "BenchAlert", "group": group},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "groupKey": f'{{}}:{{group="{group}"}}',
            "truncatedAlerts": 0,
        }
    )


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def memory(router_pid: int, prefix: str) -> dict[str, float]:
    """The router's process, the supervisor it forks at startup and the intake process the
    supervisor forks (router/supervisor.py): RSS of each (shared pages counted in each one),
    and idle, the PSS of the three together (shared pages counted once)."""
    supervisor = children(router_pid)
    intake = children(supervisor[0]) if supervisor else []
    named = {"": [router_pid], "_supervisor": supervisor, "_intake": intake}
    field = "VmHWM" if prefix == "peak" else "VmRSS"
    out = {
        f"{prefix}{name}_rss_mib": sum(rss_kib(p, field) for p in pids) / 1024
        for name, pids in named.items()
    }
    if prefix == "idle":
        out["idle_pss_total_mib"] = (
            sum(pss_kib(p) for p in [router_pid, *supervisor, *intake]) / 1024
        )
    return out


WRK_SCRIPT = """
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
-- mean_delay > 0: each connection waits an exponential time of that mean (ms) before each
-- request, so that the connections together send at a steady rate with Poisson arrivals
local mean_delay = %(mean_delay)d
if mean_delay > 0 then
  delay = function() return math.floor(-math.log(1 - math.random()) * mean_delay) end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


async def wrk_run(
    url: str, concurrency: int, seconds: int, prefix: str, rate: float = 0.0
) -> dict[str, float]:
    """Payloads of 10 alerts, each a new group, from wrk; what it measured.

    rate 0: each connection sends its next request as soon as it has the answer (capacity).
    Otherwise about `rate` requests/s in all, Poisson arrivals (see WRK_SCRIPT); the rate
    reached is in the result.
    """
    mean_delay = round(concurrency * 1000 / rate) if rate else 0
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"token": TOKEN, "prefix": prefix, "mean_delay": mean_delay})
    try:
        proc = await asyncio.create_subprocess_exec(
            "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
            "-s", script.name, url, stdout=subprocess.PIPE,
        )  # fmt: skip
        out = (await proc.communicate())[0].decode()
    finally:
        os.unlink(script.name)
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    requests, duration_us, non2xx, errors, p50_us, p99_us = map(int, line.split()[1:])
    return {
        "requests": requests,
        "accepted_per_s": (requests - non2xx - errors) / (duration_us / 1e6),
        "non_2xx": non2xx,
        "socket_errors": errors,
        "p50_ms": p50_us / 1000,
        "p99_ms": p99_us / 1000,
    }


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Sink:
    """PagerDuty-shaped endpoint that accepts at once and notes when each incident arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.count = 0

    async def enqueue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["event_action"] == "trigger":  # keyed by the payload's group (one per payload)
            group = body["payload"]["custom_details"]["firing"][0]["labels"]["group"]
            self.arrived.setdefault(group, time.time())
        self.count += 1
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]},
            status=202,
        )


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def start_router(workdir: Path, receivers: str) -> tuple[subprocess.Popen[bytes], int]:
    # max_backlog: the default (10,000) refuses part of a 5 s burst at full speed with a 503;
    # that is policy (tested in tests/test_intake.py), not what the capacity runs measure.
    port = free_port()
    config = workdir / "routes.yaml"
    config.write_text(f"""
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: {TOKEN}}}, max_body_bytes: 8388608,
  max_backlog: 100000}}
storage: {{path: "{workdir / "state.db"}"}}
delivery: {{storm_threshold: 10}}
receivers:
{receivers}
route: {{receiver: bench}}
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--config", str(config), "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    return proc, port


async def load(
    url: str, sizes: int, concurrency: int, count: int, prefix: str, rate: float | None = None
) -> dict[str, Any]:
    """Send `count` payloads with `concurrency` workers (or at a fixed `rate`/s); time each one."""
    bodies = [payload(sizes, f"{prefix}-{i}") for i in range(count)]
    latencies: list[float] = []
    sent_at: dict[str, float] = {}
    errors = 0
    next_index = 0
    started = time.perf_counter()

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        wall = time.time()
        try:
            async with session.post(url, data=bodies[i], headers=HEADERS) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
                    return
        except aiohttp.ClientError:
            errors += 1
            return
        latencies.append(time.perf_counter() - t0)
        sent_at[f"{prefix}-{i}"] = wall

    connector = aiohttp.TCPConnector(limit=max(concurrency, 64))
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        if rate is None:

            async def worker() -> None:
                nonlocal next_index
                while next_index < count:
                    i = next_index
                    next_index += 1
                    await one(session, i)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            tasks = []
            for i in range(count):
                target = started + i / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(session, i)))
            await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    ok = len(latencies)
    return {
        "payloads": ok,
        "errors": errors,
        "seconds": elapsed,
        "payloads_per_s": ok / elapsed,
        "alerts_per_s": ok * sizes / elapsed,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "sent_at": sent_at,
    }


@contextlib.asynccontextmanager
async def bench_router() -> AsyncIterator[tuple[subprocess.Popen[bytes], int, int, Sink]]:
    """A router delivering to a PagerDuty sink, and the bare handler: (router, its port, the
    bare handler's port, the sink); both up when entered, stopped when left."""
    sink = Sink()
    sink_app = web.Application()
    sink_app.router.add_post("/v2/enqueue", sink.enqueue)
    sink_runner, sink_port = await serve(sink_app)
    with tempfile.TemporaryDirectory() as tmp:
        receivers = f"""  - name: bench
    pagerduty_configs: [{{routing_key: R0UTINGKEY0000000000000000000000, url: "http://127.0.0.1:{sink_port}/v2/enqueue"}}]"""
        router, port = start_router(Path(tmp), receivers)
        bare_port = free_port()
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE, str(bare_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_up(f"http://127.0.0.1:{port}/healthz", router)
            await wait_up(f"http://127.0.0.1:{bare_port}/webhook", bare)
            yield router, port, bare_port, sink
        finally:
            for p in (router, bare):
                p.terminate()
                p.wait(timeout=20)
            await sink_runner.cleanup()


async def throughput(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"router": [], "bare": []}
    count = 600 if quick else 3000
    async with bench_router() as (router, port, bare_port, sink):
        await asyncio.sleep(1.0)
        results |= memory(router.pid, "idle")
        for size in (1, 10, 50):
            for conc in (1, 8, 32, 64):
                n = count if size < 50 else count // 3
                r = await load(f"http://127.0.0.1:{port}/webhook", size, conc, n, f"t{size}-{conc}")
                r |= await delivered(sink, r.pop("sent_at"))
                results["router"].append({"alerts": size, "concurrency": conc, **r})
                b = await load(
                    f"http://127.0.0.1:{bare_port}/webhook", size, conc, n, f"b{size}-{conc}"
                )
                b.pop("sent_at")
                results["bare"].append({"alerts": size, "concurrency": conc, **b})
                print_row(size, conc, r, b)
        # Alertmanager re-sending groups the router already knows (its steady state between
        # changes): durable commit and dedup, no delivery.
        n = count
        await load(f"http://127.0.0.1:{port}/webhook", 10, 32, n, "resend")
        await asyncio.sleep(2.0)
        r = await load(f"http://127.0.0.1:{port}/webhook", 10, 32, n, "resend")
        r.pop("sent_at")
        results["resend"] = r
        print(
            f"   10 alerts  c=32  re-sends of known groups: {r['payloads_per_s']:8.0f} payloads/s "
            f"{r['alerts_per_s']:9.0f} alerts/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
            f"errors {r['errors']}",
            flush=True,
        )
        rows10 = [r for r in results["router"] if r["alerts"] == 10]
        # Latency at half the best accepted rate (the measure), and at half the best
        # rate at which payloads were also planned and delivered (what can be sustained).
        results["latency"] = []
        for basis, best in (
            ("accepted", max(r["payloads_per_s"] for r in rows10)),
            ("delivered", max(r["delivered_per_s"] for r in rows10)),
        ):
            rate = best / 2
            await asyncio.sleep(2.0)  # let the outbox drain before the latency run
            n = int(min(rate * (5 if quick else 15), 6000))
            r = await load(f"http://127.0.0.1:{port}/webhook", 10, 64, n, f"lat-{basis}", rate=rate)
            sent_at = r.pop("sent_at")
            await delivered(sink, sent_at)
            e2e = [sink.arrived[g] - t for g, t in sent_at.items() if g in sink.arrived]
            lat = {
                "basis": basis,
                "rate_per_s": rate,
                "payloads": r["payloads"],
                "errors": r["errors"],
                "webhook_p50_ms": r["p50_ms"],
                "webhook_p99_ms": r["p99_ms"],
                "e2e_p50_ms": pct(e2e, 50) * 1000,
                "e2e_p99_ms": pct(e2e, 99) * 1000,
                "e2e_measured": len(e2e),
            }
            results["latency"].append(lat)
            print(
                f"latency at {lat['rate_per_s']:.0f} payloads/s of 10 alerts (half the best"
                f" {basis} rate): webhook p50 {lat['webhook_p50_ms']:.1f} ms p99"
                f" {lat['webhook_p99_ms']:.1f} ms; end to end p50 {lat['e2e_p50_ms']:.1f} ms"
                f" p99 {lat['e2e_p99_ms']:.1f} ms ({lat['e2e_measured']} deliveries,"
                f" {lat['errors']} errors)",
                flush=True,
            )
        results |= memory(router.pid, "peak")
    return results


async def with_wrk() -> dict[str, Any]:
    """wrk (a C load generator, far lighter than the Python one) against a router of its own,
    started fresh: accepted payloads/s at full speed, then webhook latency at steady rates."""
    results: dict[str, Any] = {}
    if not shutil.which("wrk"):
        print("   (wrk not installed: apt-get install wrk for the C load generator)")
        return results
    async with bench_router() as (router, port, bare_port, sink):
        results["wrk"] = []
        for conc in (16, 64):
            await asyncio.sleep(5.0)  # let planning and delivery catch up first
            before = sink.count
            w = await wrk_run(f"http://127.0.0.1:{port}/webhook", conc, 5, f"wrk{conc}")
            b = await wrk_run(f"http://127.0.0.1:{bare_port}/webhook", conc, 5, "bare")
            started = time.time()
            for _ in range(1200):  # bounded: 120 s for the sink to get every event
                if sink.count - before >= w["requests"] - w["non_2xx"]:
                    break
                await asyncio.sleep(0.1)
            w["all_delivered_after_s"] = time.time() - started + 5
            w["bare_per_s"] = b["accepted_per_s"]
            results["wrk"].append({"concurrency": conc, **w})
            print(
                f"   10 alerts  c={conc:<3} wrk: accepted {w['accepted_per_s']:6.0f}"
                f" payloads/s  p50 {w['p50_ms']:6.1f} ms  p99 {w['p99_ms']:6.1f} ms"
                f"  non-2xx {w['non_2xx']}  errors {w['socket_errors']}; all planned and"
                f" delivered {w['all_delivered_after_s']:.1f} s after the first send;"
                f" bare {b['accepted_per_s']:5.0f}/s"
                f" ratio {w['accepted_per_s'] / b['accepted_per_s']:.2f}",
                flush=True,
            )
        # Webhook latency at a steady rate: the target's (half of 2,000/s) and half the
        # best rate wrk reached, Poisson arrivals from 64 connections.
        best = max(w["accepted_per_s"] for w in results["wrk"])
        results["wrk_latency"] = []
        for rate in sorted({1000.0, round(best / 2, -1)}):
            await asyncio.sleep(5.0)
            before = sink.count
            w = await wrk_run(
                f"http://127.0.0.1:{port}/webhook", 64, 10, f"wrkrate{rate:.0f}", rate
            )
            results["wrk_latency"].append({"rate_asked": rate, **w})
            print(
                f"   10 alerts  wrk at {w['accepted_per_s']:5.0f}/s (asked {rate:.0f}/s,"
                f" Poisson, c=64): webhook p50 {w['p50_ms']:5.1f} ms  p99"
                f" {w['p99_ms']:5.1f} ms  non-2xx {w['non_2xx']}  errors"
                f" {w['socket_errors']}",
                flush=True,
            )
            for _ in range(1200):  # bounded: let planning and delivery catch up
                if sink.count - before >= w["requests"] - w["non_2xx"]:
                    break
                await asyncio.sleep(0.1)
    return results


async def delivered(
    sink: Sink, sent_at: dict[str, float], timeout_s: float = 120.0
) -> dict[str, Any]:
    """Wait (bounded) until the sink got every payload's event; the rate from first send to last."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(g not in sink.arrived for g in sent_at):
        await asyncio.sleep(0.05)
    got = [sink.arrived[g] for g in sent_at if g in sink.arrived]
    span = (max(got) - min(sent_at.values())) if got else float("nan")
    return {"delivered": len(got), "delivered_s": span, "delivered_per_s": len(got) / span}


def print_row(size: int, conc: int, r: dict[str, Any], b: dict[str, Any]) -> None:
    print(
        f"  {size:>3} alerts  c={conc:<3} accepted {r['payloads_per_s']:6.0f} payloads/s {r['alerts_per_s']:7.0f} "
        f"alerts/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}  "
        f"delivered {r['delivered']}/{r['payloads']} at {r['delivered_per_s']:5.0f}/s  "
        f"bare {b['payloads_per_s']:5.0f}/s  ratio {r['payloads_per_s'] / b['payloads_per_s']:.2f}",
        flush=True,
    )


async def storm(quick: bool) -> dict[str, Any]:
    groups, per_group = (40, 50) if quick else (200, 50)
    fake = FakeTelegram()  # flood control on: 1 message/s per chat, 429 with retry_after beyond
    runner, tg_port = await serve(fake.app())
    with tempfile.TemporaryDirectory() as tmp:
        receivers = f"""  - name: bench
    telegram_configs: [{{bot_token: "123456:good-token", chat_id: -1002, api_url: "http://127.0.0.1:{tg_port}"}}]"""
        router, port = start_router(Path(tmp), receivers)
        try:
            await wait_up(f"http://127.0.0.1:{port}/healthz", router)
            started = time.perf_counter()
            r = await load(f"http://127.0.0.1:{port}/webhook", per_group, 16, groups, "storm")
            accepted_s = time.perf_counter() - started
            async with aiohttp.ClientSession() as s:
                for _ in range(1200):  # bounded: 120 s
                    async with s.get(
                        f"http://127.0.0.1:{port}/api/v1/incidents?limit=10000",
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    ) as resp:
                        notes = [
                            n for i in (await resp.json())["incidents"] for n in i["notifications"]
                        ]
                    if notes and all(n["state"] in ("sent", "dead") for n in notes):
                        break
                    await asyncio.sleep(0.1)
            done_s = time.perf_counter() - started
            sends = fake.sent()
            answered_429 = len(sends) - len(fake.messages)
            return {
                "alerts": groups * per_group,
                "groups": groups,
                "accepted": r["payloads"],
                "all_accepted_s": accepted_s,
                "last_delivered_s": done_s,
                "telegram_messages": len(fake.messages),
                "digests": sum("notifications at once" in m.text for m in fake.messages.values()),
                "notifications_sent": sum(n["state"] == "sent" for n in notes),
                "dead": sum(n["state"] == "dead" for n in notes),
                "telegram_429s": answered_429,
            }
        finally:
            router.terminate()
            router.wait(timeout=20)
            await runner.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer requests (a smoke run, noisier figures)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    print(
        f"alert-router benchmark on {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        flush=True,
    )
    print(
        "throughput (each payload a new incident and a delivery to an unthrottled sink):",
        flush=True,
    )
    t = await throughput(args.quick)
    t |= await with_wrk()
    print(
        f"memory: idle RSS {t['idle_rss_mib']:.1f} MiB (router), {t['idle_supervisor_rss_mib']:.1f}"
        f" MiB (supervisor), {t['idle_intake_rss_mib']:.1f} MiB (intake process), PSS of the"
        f" three {t['idle_pss_total_mib']:.1f} MiB; peak RSS {t['peak_rss_mib']:.1f},"
        f" {t['peak_supervisor_rss_mib']:.1f}, {t['peak_intake_rss_mib']:.1f} MiB",
        flush=True,
    )
    s = await storm(args.quick)
    print(
        f"storm: {s['alerts']} alerts in {s['groups']} groups accepted in {s['all_accepted_s']:.1f} s; last "
        f"notification delivered at {s['last_delivered_s']:.1f} s; {s['telegram_messages']} Telegram messages "
        f"({s['digests']} digests) for {s['notifications_sent']} notifications, {s['dead']} dead; "
        f"Telegram answered 429 {s['telegram_429s']} time(s)",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps({"throughput": t, "storm": s}, indent=2, default=str))


if __name__ == "__main__":
    asyncio.run(main())
