"""`serve` on PostgreSQL as real processes: two replicas on one database, one plans what both
accept and the other takes over when it stops; connections the server ends are made again."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp
import pytest

from ..harness import Fakes, firing_payload
from ..helpers import free_port, wait_http
from ..postgres import PostgresServer, binaries, end_connections
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


async def serve(fakes: Fakes, folder: Path, url: str) -> tuple[int, subprocess.Popen[bytes]]:
    """Start `serve` on the database at `url` (config and log in `folder`) and wait until it
    is ready: (its port, its process)."""
    port = free_port()
    folder.mkdir(exist_ok=True)
    config = folder / "routes.yaml"
    write_config(config, port, fakes, url)
    proc = start(config)
    await wait_http(f"http://127.0.0.1:{port}/readyz", proc, log=folder / "router.log")
    return port, proc


async def post(port: int, group: str) -> str:
    """POST a firing payload of `group` to the router on `port`; it must answer 200 (a router
    whose connections were just ended may answer 503 first: retried for a bounded time).
    Returns the payload's correlation id."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    async with aiohttp.ClientSession() as session:
        while True:
            url = f"http://127.0.0.1:{port}/webhook"
            async with session.post(url, data=firing_payload(1, group), headers=HEADERS) as resp:
                if resp.status == 200 or loop.time() > deadline:
                    assert resp.status == 200, await resp.text()
                    correlation_id: str = (await resp.json())["correlation_id"]
                    return correlation_id
            await asyncio.sleep(0.1)


async def readyz(port: int) -> dict[str, object]:
    """The /readyz answer of the router on `port` (200 expected)."""
    url = f"http://127.0.0.1:{port}/readyz"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, object] = await resp.json()
        return body


async def outcome(port: int, correlation_id: str) -> tuple[int, dict[str, object]]:
    """GET /api/v1/payloads/<correlation_id> from the router on `port`: (status, body)."""
    url = f"http://127.0.0.1:{port}/api/v1/payloads/{correlation_id}"
    async with aiohttp.ClientSession() as session, session.get(url, headers=HEADERS) as resp:
        body: dict[str, object] = await resp.json()
        return resp.status, body


async def triggered(fakes: Fakes, count: int) -> list[str]:
    """Wait (bounded) until PagerDuty got `count` trigger events; their dedup keys."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(fakes.pagerduty.events) < count and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return [e["dedup_key"] for e in fakes.pagerduty.events if e["event_action"] == "trigger"]


async def test_two_replicas_one_plans_what_both_accept_the_other_takes_over_at_its_stop(
    fakes: Fakes, tmp_path: Path, postgres_url: str
) -> None:
    first_port, first = await serve(fakes, tmp_path / "first", postgres_url)
    second_port, second = await serve(fakes, tmp_path / "second", postgres_url)  # ready too
    try:
        assert (await readyz(first_port))["role"] == "planner"
        standby = await readyz(second_port)
        assert (standby["status"], standby["role"], standby["epoch"]) == ("ready", "standby", 0)
        via_standby = await post(second_port, "via-standby")  # planned by the first
        await post(first_port, "via-planner")
        assert len(set(await triggered(fakes, 2))) == 2
        # The planner knows the outcome; the standby that accepted it no longer says pending.
        assert (await outcome(first_port, via_standby))[1]["state"] == "planned"
        status, body = await outcome(second_port, via_standby)
        assert status == 404, body
        assert "by the replica that planned them" in str(body["error"])
        assert stop(first) == 0  # gives the lease up: the second takes it at its next try
        await post(second_port, "after-takeover")
        assert len(set(await triggered(fakes, 3))) == 3
        planner = await readyz(second_port)
        assert (planner["role"], planner["epoch"]) == ("planner", 2)
        log = (tmp_path / "second" / "router.log").read_text()
        assert "planning_started" in log
    finally:
        stop(first)
        assert stop(second) == 0


async def test_connections_the_server_ends_are_made_again(
    fakes: Fakes, tmp_path: Path, postgres_url: str
) -> None:
    port, proc = await serve(fakes, tmp_path, postgres_url)
    try:
        await post(port, "before")
        assert len(await triggered(fakes, 1)) == 1
        await end_connections(postgres_url)
        await post(port, "after")
        assert len(set(await triggered(fakes, 2))) == 2
        await wait_http(f"http://127.0.0.1:{port}/readyz", proc, log=tmp_path / "router.log")
    finally:
        assert stop(proc) == 0


async def test_two_replicas_keep_working_across_a_restart_of_postgresql(
    fakes: Fakes, tmp_path: Path
) -> None:
    """The database restarts (an upgrade, a failover): every connection of both replicas
    ends. Without a restart of their own, both accept again, one plans, and what each
    accepted after it is notified."""
    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL not found")
    server = PostgresServer(bin_dir)  # its own: the session's server is not restarted
    server.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        url = await server.new_database()
        first_port, first = await serve(fakes, tmp_path / "first", url)
        procs.append(first)
        second_port, second = await serve(fakes, tmp_path / "second", url)
        procs.append(second)
        await post(second_port, "before")
        assert len(await triggered(fakes, 1)) == 1
        await asyncio.to_thread(server.restart)
        await post(first_port, "after-1")
        await post(second_port, "after-2")
        assert len(set(await triggered(fakes, 3))) == 3
        deadline = asyncio.get_running_loop().time() + 15  # a takeover may be under way
        while True:
            roles = [(await readyz(port))["role"] for port in (first_port, second_port)]
            if sorted(roles) == ["planner", "standby"]:
                break
            assert asyncio.get_running_loop().time() < deadline, roles
            await asyncio.sleep(0.1)
    finally:
        for proc in procs:
            stop(proc)
        server.stop()
