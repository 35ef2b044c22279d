"""SIGKILL a running router under load: every payload answered 200 is on disk (in the inbox, or
planned with its notifications), and after a restart Alertmanager's retries lose and double nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ..helpers import (
    free_port,
    notifications_in_store,
    planned_outcome,
    post_until_gone,
    wait_http,
    waiting_in_inbox,
)

pytestmark = pytest.mark.slow

CONFIG = """
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: t0ken}}}}
storage: {{path: "{db}"}}
receivers:
  - name: chat
    telegram_configs: [{{bot_token: "1:t", chat_id: 1}}]
    slack_configs: [{{bot_token: xoxb-1, channel: "#c"}}]
route: {{receiver: chat}}
"""
HEADERS = {"Authorization": "Bearer t0ken", "Content-Type": "application/json"}
KILL_AFTER = 200  # payloads accepted before the SIGKILL (and one of them planned)


def payload(n: int) -> bytes:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "Load", "group": str(n), "instance": f"i{k}"},
            "annotations": {"summary": f"payload {n} alert {k}"},
            "startsAt": "2026-11-23T06:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": f"{n:08x}{k:08x}",
        }
        for k in range(3)
    ]
    return orjson.dumps(
        {
            "version": "4",
            "receiver": "am",
            "status": "firing",
            "alerts": alerts,
            "groupLabels": {"group": str(n)},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://am:9093",
            "groupKey": f'{{}}:{{group="{n}"}}',
            "truncatedAlerts": 0,
        }
    )


def start(config: Path, *, dry_run: bool = True) -> subprocess.Popen[bytes]:
    """`alert-router serve` logging warnings to router.log; --dry-run unless told otherwise."""
    with open(config.parent / "router.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(config)]
            + ["--log-level", "warning"]
            + (["--dry-run"] if dry_run else []),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def serve(
    template: str, folder: Path, *, dry_run: bool = True, **fields: object
) -> tuple[subprocess.Popen[bytes], int]:
    """Write `template` (its `port` field filled with a free port, the others from `fields`) to
    routes.yaml, start the router on it and wait for /healthz; (process, port).

    A port found free can be taken by another process's connection before the router binds
    it (the machine runs other suites): the router then exits with "cannot listen", and it is
    started again on another port. Any other exit fails with the end of the router's log."""
    log = folder / "router.log"
    for _ in range(5):
        port = free_port()
        config = folder / "routes.yaml"
        config.write_text(template.format(port=port, **fields))
        logged = log.stat().st_size if log.exists() else 0
        proc = start(config, dry_run=dry_run)
        try:
            await wait_http(f"http://127.0.0.1:{port}/healthz", proc, log=log)
            return proc, port
        except AssertionError:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            with open(log, "rb") as f:
                f.seek(logged)
                if b"cannot listen on" not in f.read():
                    raise
    raise AssertionError(f"no free port found for the router in 5 tries; see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def planning_started(db: Path) -> bool:
    """The router has planned at least one payload (its inbox watermark moved)."""
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        (watermark,) = conn.execute("SELECT watermark FROM planner").fetchone()
    return int(watermark) > 0


async def send_all(url: str, numbers: list[int]) -> dict[int, dict[str, Any]]:
    """Post payloads 8 at a time (what Alertmanager retries after a restart)."""
    accepted: dict[int, dict[str, Any]] = {}
    queue = list(numbers)

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            n = queue.pop(0)
            try:
                async with session.post(url, data=payload(n), headers=HEADERS) as resp:
                    if resp.status == 200:
                        accepted[n] = await resp.json()
            except (TimeoutError, aiohttp.ClientError):
                pass

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(worker(session) for _ in range(8)))
    return accepted


async def test_sigkill_under_load_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    proc, port = await serve(CONFIG, tmp_path, db=db)
    url = f"http://127.0.0.1:{port}/webhook"
    try:
        # SIGKILL once KILL_AFTER were accepted and planning has begun.
        accepted, posted = await post_until_gone(
            url,
            payload,
            HEADERS,
            workers=8,
            stop_when=lambda accepted: len(accepted) >= KILL_AFTER and planning_started(db),
            stop=lambda: proc.send_signal(signal.SIGKILL),
        )
        assert await asyncio.to_thread(proc.wait, 10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert KILL_AFTER <= len(accepted) < posted, "the kill should land mid-load"

    # On disk, straight after the kill, each accepted payload is either still in the inbox (to
    # be planned at the next start) or planned: its alerts stored and its notifications (2
    # channels) queued, being sent, or sent. None is missing.
    with sqlite3.connect(db) as conn:
        fingerprints = {r[0] for r in conn.execute("SELECT fingerprint FROM alerts")}
        outbox = conn.execute("SELECT correlation_id FROM outbox").fetchall()
    in_inbox = set(waiting_in_inbox(db))
    rows_by_payload: dict[str, int] = {}
    for (correlation_id,) in outbox:
        rows_by_payload[correlation_id] = rows_by_payload.get(correlation_id, 0) + 1
    planned = 0
    for n, answer in accepted.items():
        cid = answer["correlation_id"]
        if cid in in_inbox:
            continue
        planned += 1
        assert {f"{n:08x}{k:08x}" for k in range(3)} <= fingerprints, f"payload {n} lost alerts"
        assert rows_by_payload.get(cid) == 2, f"payload {n} lost its notifications"
    assert planned > 0  # the kill came once planning had begun

    # Restart; Alertmanager retries everything it did not get a 200 for, and (to be hard on us)
    # everything it did. Nothing is queued twice; everything is delivered.
    proc, port = await serve(CONFIG, tmp_path, db=db)
    url = f"http://127.0.0.1:{port}/webhook"
    try:
        again = await send_all(url, list(range(posted)))
        assert len(again) == posted
        async with aiohttp.ClientSession() as session:
            for n in accepted:
                outcome = await planned_outcome(
                    session, f"http://127.0.0.1:{port}", again[n]["correlation_id"], HEADERS
                )
                assert outcome["queued"] == 0, f"payload {n} queued again after the restart"
        # Planning (answered 200 is not yet planned: intake runs ahead) and the dry-run worker
        # draining the outbox, waited for (a generous 60 s), as the store has them.
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            incidents, per_incident, states = notifications_in_store(db)
            if incidents == posted and states == {"sent"}:
                break
            await asyncio.sleep(0.1)
        assert incidents == posted
        assert per_incident == [2] * posted, "each incident: one Telegram and one Slack message"
        assert states == {"sent"}
    finally:
        stop(proc)
    assert os.path.exists(db)


DESTINATIONS = 4
PD_CONFIG = """
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: t0ken}}}}
storage: {{path: "{db}"}}
receivers:
  - name: pager
    pagerduty_configs:
{destinations}
route: {{receiver: pager}}
"""


async def test_sigkill_while_delivering_sends_at_most_one_again_per_destination(
    tmp_path: Path,
) -> None:
    """Full speed (PagerDuty has no per-destination pace): SIGKILL while notifications go out,
    restart, let everything be delivered; each (destination, incident) reached the service
    twice at most once per destination, as the README promises."""
    from aiohttp import web

    from ..fakes.pagerduty import FakePagerDuty

    sink = FakePagerDuty()
    runner = web.AppRunner(sink.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sink_port = runner.addresses[0][1]
    db = tmp_path / "state.db"
    destinations = "\n".join(
        f'      - {{routing_key: "key-{d}", url: "http://127.0.0.1:{sink_port}/v2/enqueue"}}'
        for d in range(DESTINATIONS)
    )
    count = 300
    try:
        proc, port = await serve(
            PD_CONFIG, tmp_path, dry_run=False, db=db, destinations=destinations
        )
        url = f"http://127.0.0.1:{port}/webhook"
        try:
            accepted = await send_all(url, list(range(count)))
            assert len(accepted) == count
            # Kill once a good part, not all, of the notifications went out.
            for _ in range(600):
                if len(sink.events) >= count * DESTINATIONS // 3:
                    break
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
        assert len(sink.events) < count * DESTINATIONS, "the kill should land mid-delivery"

        proc, port = await serve(
            PD_CONFIG, tmp_path, dry_run=False, db=db, destinations=destinations
        )
        try:
            for _ in range(600):  # 60 s at most
                seen = {(e["routing_key"], e["dedup_key"]) for e in sink.events}
                if len(seen) >= count * DESTINATIONS:
                    break
                await asyncio.sleep(0.1)
        finally:
            stop(proc)
    finally:
        await runner.cleanup()
    sent: dict[tuple[str, str], int] = {}
    for e in sink.events:
        assert e["event_action"] == "trigger"
        key = (e["routing_key"], e["dedup_key"])
        sent[key] = sent.get(key, 0) + 1
    assert len(sent) == count * DESTINATIONS, "every incident reached every destination"
    again = {f"key-{d}": 0 for d in range(DESTINATIONS)}
    for (routing_key, _), times in sent.items():
        again[routing_key] += times - 1
    assert all(n <= 1 for n in again.values()), f"sent again per destination: {again}"
