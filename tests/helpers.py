"""Paths and small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import orjson
import pytest

from router.config import RouterConfig
from router.metrics import Metrics
from router.models import WebhookPayload
from router.outcomes import Outcomes
from router.pipeline import Pipeline
from router.planner import PARSED_BYTES, Planner
from router.state import Plan
from router.store import Store
from router.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
FIXTURES = DATA / "alertmanager"


# The Debian package that ships each binary the suite runs.
DEBIAN_PACKAGE = {
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "docker-compose": "docker-compose",
    # Debian 12's kubectl 1.20 (its kustomize 2.0 builds deploy/kubernetes); machines that
    # already have a kubectl from elsewhere keep it (make deps installs this one only if none).
    "kubectl": "kubernetes-client",
}


def require_binary(name: str) -> str:
    """The path of a Debian-packaged binary; skip locally if missing, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        package = DEBIAN_PACKAGE.get(name, name)
        message = (
            f"{name} not found: install Debian's {package} "
            f"(make deps, or apt-get install {package})"
        )
        skip_or_fail(message)
    return path


def skip_or_fail(message: str) -> NoReturn:
    """Skip the test for want of a Debian package locally; fail it under CI=true (CI installs
    every package the suite needs)."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def fixture_body(name: str) -> bytes:
    """The exact bytes Alertmanager 0.25 sent for a captured payload."""
    return (FIXTURES / "raw" / f"{name}.body").read_bytes()


def fixture_json(name: str) -> dict[str, object]:
    data: dict[str, object] = orjson.loads((FIXTURES / f"{name}.json").read_bytes())
    return data


def waiting_in_inbox(store_path: Path) -> list[str]:
    """Correlation ids in the inbox after the store's watermark: accepted, not planned yet."""
    with contextlib.closing(sqlite3.connect(store_path, timeout=5)) as db:
        (watermark,) = db.execute("SELECT watermark FROM planner").fetchone()
        rows = db.execute("SELECT correlation_id FROM inbox WHERE id>? ORDER BY id", (watermark,))
        return [r[0] for r in rows]


def notifications_in_store(store_path: Path) -> tuple[int, list[int], set[str]]:
    """From a router's store file: (how many incidents, how many notifications each incident
    has, the states those notifications are in)."""
    with contextlib.closing(sqlite3.connect(store_path, timeout=5)) as db:
        (incidents,) = db.execute("SELECT count(*) FROM incidents").fetchone()
        rows = db.execute("SELECT count(*) FROM outbox GROUP BY incident_id").fetchall()
        states = {r[0] for r in db.execute("SELECT DISTINCT state FROM outbox")}
    return int(incidents), [int(r[0]) for r in rows], states


def slack_signed(body: bytes, secret: str, age_s: float = 0) -> dict[str, str]:
    """Headers as Slack sends them: v0 HMAC-SHA256 over "v0:<timestamp>:<body>"."""
    ts = str(int(time.time() - age_s))
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_http(
    url: str, proc: object = None, timeout_s: float = 15.0, log: Path | None = None
) -> None:
    """Poll url until it answers 200; fail early if the process `proc` (Popen) exited. A failure
    quotes the end of `log`, the server's log file (the run's temp folder is removed after)."""
    import asyncio
    import subprocess

    import aiohttp

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            if isinstance(proc, subprocess.Popen) and proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}{_tail(log)}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout_s}s{_tail(log)}")


def _tail(log: Path | None, lines: int = 20) -> str:
    """The last lines of a log file, as the end of an assertion message ("" without one)."""
    if log is None or not log.exists():
        return ""
    return "; its log ends:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def planned_outcome(
    session: Any,
    base_url: str,
    correlation_id: str,
    headers: dict[str, str],
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """GET /api/v1/payloads/<id> from a running router until the payload is planned (bounded
    wait: `timeout_s`, generous: the router plans after the 200, later on a loaded machine)."""
    import asyncio

    url = f"{base_url}/api/v1/payloads/{correlation_id}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        async with session.get(url, headers=headers) as resp:
            outcome: dict[str, Any] = await resp.json()
        if outcome["state"] != "pending":
            return outcome
        if loop.time() > deadline:
            raise AssertionError(f"{correlation_id} not planned in {timeout_s} s")
        await asyncio.sleep(0.01)


async def post_until_gone(
    url: str,
    body: Callable[[int], bytes],
    headers: dict[str, str],
    workers: int,
    stop_when: Callable[[dict[int, dict[str, Any]]], bool],
    stop: Callable[[], None],
    max_posts: int = 5000,
) -> tuple[dict[int, dict[str, Any]], int]:
    """Load a running router: POST body(0), body(1)... `workers` at a time; once
    stop_when(accepted) holds, call stop() (a signal to the router) once, and go on posting until
    the router stops answering, so that the signal surely lands mid-load. Fails if `max_posts`
    were posted first. Returns (the JSON answers of the accepted posts by number, how many
    numbers were posted)."""
    import asyncio

    import aiohttp

    accepted: dict[int, dict[str, Any]] = {}
    numbers = iter(range(max_posts))
    posted = 0
    stopped = False

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal posted, stopped
        for n in numbers:
            posted = max(posted, n + 1)
            try:
                async with session.post(url, data=body(n), headers=headers) as resp:
                    if resp.status == 200:
                        accepted[n] = await resp.json()
            except (TimeoutError, aiohttp.ClientError):
                if stopped:
                    return  # no longer answering
            if not stopped and stop_when(accepted):
                stop()
                stopped = True

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(worker(session) for _ in range(workers)))
    assert stopped and posted < max_posts, f"the router answered all {max_posts} posts"
    return accepted, posted


@dataclass
class Core:
    """The store and the planner of a router without its HTTP side: what planning tests drive.

    The planner runs no task of its own: `ingest` and `plan_waiting` plan what waits, now."""

    store: Store
    planner: Planner
    outcomes: Outcomes

    async def ingest(self, body: bytes, at: datetime, correlation_id: str) -> Plan:
        """Accept `body` as the webhook does (parsed once, committed), then plan what waits;
        this payload's plan."""
        payload = WebhookPayload.model_validate_json(body)
        await self.planner.accept(body, at, correlation_id, payload)
        return dict(await self.planner.plan_waiting())[correlation_id]

    async def aclose(self) -> None:
        """Stop the planner, then close the store."""
        await self.planner.aclose()
        await self.store.aclose()


# The planner lease a test's planner takes (no keep_lease() renews it): longer than any test.
TEST_LEASE = timedelta(hours=1)


async def open_core(
    where: Path | Store, config: RouterConfig, parsed_bytes: int = PARSED_BYTES
) -> Core:
    """Open the store (a SQLite file at a path, or a store of any engine, not open yet), take
    the planner lease for TEST_LEASE, and load its state into a planner for `config` (that
    keeps up to `parsed_bytes` of parsed payloads in memory)."""
    store = SqliteStore(where) if isinstance(where, Path) else where
    await store.open()
    await store.take_lease(TEST_LEASE)
    outcomes = Outcomes()
    planner = Planner(
        store,
        lambda new_id: Pipeline(config, new_id),
        wake_outbox=asyncio.Event(),
        outcomes=outcomes,
        metrics=Metrics(),
        parsed_bytes=parsed_bytes,
    )
    try:
        await planner.start(background=False)
    except BaseException:
        await store.aclose()
        raise
    return Core(store, planner, outcomes)
