"""`serve` on PostgreSQL as a real process: a webhook is accepted, planned and delivered, a
second router on the same database is refused (one replica at a time in this version), and a
lost lock is one /readyz reason saying what to do."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from ..harness import Fakes, firing_payload
from ..helpers import free_port, wait_http
from ..postgres import end_the_routers_lock
from .test_process import HEADERS, TOKEN, start, stop

pytestmark = pytest.mark.slow


def write_config(path: Path, port: int, fakes: Fakes, url: str) -> None:
    """A router on `port` keeping its state at `url`, PagerDuty to the fake."""
    path.write_text(f"""
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: {TOKEN}}}}}
storage: {{url: "{url}"}}
receivers:
  - name: main
    pagerduty_configs: [{{routing_key: R0UTINGKEY0000000000000000000000,
                         url: "{fakes.urls["pagerduty"]}/v2/enqueue"}}]
route: {{receiver: main}}
""")


async def serve(fakes: Fakes, tmp_path: Path, url: str) -> tuple[int, subprocess.Popen[bytes]]:
    """Start `serve` on the database at `url` (config in tmp_path) and wait until it is ready:
    (its port, its process)."""
    port = free_port()
    config = tmp_path / "routes.yaml"
    write_config(config, port, fakes, url)
    proc = start(config)
    await wait_http(f"http://127.0.0.1:{port}/readyz", proc, log=tmp_path / "router.log")
    return port, proc


async def test_serve_on_postgresql_delivers_and_refuses_a_second_router(
    fakes: Fakes, tmp_path: Path, postgres_url: str
) -> None:
    port, proc = await serve(fakes, tmp_path, postgres_url)
    try:
        async with aiohttp.ClientSession() as session:
            body = firing_payload(2, "pg-e2e")
            url = f"http://127.0.0.1:{port}/webhook"
            async with session.post(url, data=body, headers=HEADERS) as resp:
                assert resp.status == 200, await resp.text()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not fakes.pagerduty.events and loop.time() < deadline:
            await asyncio.sleep(0.05)
        (event,) = fakes.pagerduty.events
        assert event["event_action"] == "trigger"

        second = tmp_path / "second"
        second.mkdir()
        write_config(second / "routes.yaml", free_port(), fakes, postgres_url)
        refused = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "router",
                "serve",
                "--config",
                str(second / "routes.yaml"),
                "--log-format",
                "json",
            ],
            capture_output=True,
            timeout=60,
        )
        assert refused.returncode == 1
        assert b"Traceback" not in refused.stderr
        lines = [orjson.loads(line) for line in refused.stderr.splitlines() if line[:1] == b"{"]
        (failed,) = [line for line in lines if line.get("event") == "startup_failed"]
        assert "another alert-router uses this database" in failed["error"]
        assert postgres_url in failed["error"]
    finally:
        assert stop(proc) == 0


async def test_a_lost_lock_makes_readyz_say_so_once_with_what_to_do(
    fakes: Fakes, tmp_path: Path, postgres_url: str
) -> None:
    port, proc = await serve(fakes, tmp_path, postgres_url)
    try:
        readyz = f"http://127.0.0.1:{port}/readyz"
        await end_the_routers_lock(postgres_url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        async with aiohttp.ClientSession() as session:
            while True:  # the router notices the server closed its connection (bounded wait)
                async with session.get(readyz) as resp:
                    status, body = resp.status, await resp.json()
                reasons = body.get("reasons", [])
                lost = [reason for reason in reasons if "lock on it was lost" in reason]
                if lost or loop.time() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert status == 503 and len(lost) == 1, body
            async with session.get(readyz) as resp:  # and so it stays
                status, body = resp.status, await resp.json()
        lost = [reason for reason in body["reasons"] if "lock on it was lost" in reason]
        assert status == 503 and len(lost) == 1, body
        assert "restart alert-router" in lost[0]
    finally:
        stop(proc)
