"""The router as a real process: SIGTERM under load, SIGHUP reload, and what its logs never show."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from ..harness import Fakes, firing_payload
from ..helpers import (
    free_port,
    notifications_in_store,
    planned_outcome,
    post_until_gone,
    wait_http,
    waiting_in_inbox,
)

pytestmark = pytest.mark.slow
TOKEN = "process-bearer-token-123"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
SIGNING = "process-slack-signing-secret"


def start(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(config.parent / "router.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(config), *extra],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def write_config(path: Path, port: int, fakes: Fakes, token: str = TOKEN) -> None:
    """A router on `port`, PagerDuty to the fake, Slack chat-ops signed with SIGNING."""
    path.write_text(f"""
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: {token}}}}}
storage: {{path: "{path.parent / "state.db"}"}}
receivers:
  - name: main
    pagerduty_configs: [{{routing_key: R0UTINGKEY0000000000000000000000,
                         url: "{fakes.urls["pagerduty"]}/v2/enqueue"}}]
route: {{receiver: main}}
chatops:
  slack: {{signing_secret: {SIGNING}, team_id: T1, allowed_channels: [C1]}}
""")


@contextlib.asynccontextmanager
async def running(
    fakes: Fakes, tmp_path: Path, port: int = 0
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, int]]:
    """A router (see write_config) on `port` or a free one, answering; after, stopped cleanly
    unless the test has already ended it."""
    port = port or free_port()
    write_config(tmp_path / "routes.yaml", port, fakes)
    proc = start(tmp_path / "routes.yaml")
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield proc, f"http://127.0.0.1:{port}", port
    finally:
        if proc.poll() is None:
            assert stop(proc) == 0


async def test_header_bytes_that_are_not_utf8_are_unequal_to_the_token(
    fakes: Fakes, tmp_path: Path
) -> None:
    # The token followed by one byte that is not UTF-8 must not let anyone in to the read API
    # (an HTTP client that dropped such bytes once did, in front of the router).
    async with running(fakes, tmp_path) as (_, _, port):
        for tail in (b"\xff", b"\xe9", b"\xc3"):
            request = (
                b"GET /api/v1/alerts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Authorization: Bearer " + TOKEN.encode() + tail + b"\r\n\r\n"
            )
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request)
                assert (await reader.readline()).startswith(b"HTTP/1.1 401 "), tail
            finally:
                writer.close()


async def test_sigterm_under_load_finishes_in_flight_and_loses_nothing(
    fakes: Fakes, tmp_path: Path
) -> None:
    port = free_port()
    fakes.pagerduty.delay_s = 0.2  # every delivery takes a while: some are in flight at SIGTERM
    config = tmp_path / "routes.yaml"
    config.write_text(f"""
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: {TOKEN}}}, shutdown_grace: 5s}}
storage: {{path: "{tmp_path / "state.db"}"}}
delivery: {{storm_threshold: 1000}}
receivers:
  - name: main
    pagerduty_configs: [{{routing_key: R0UTINGKEY0000000000000000000000, url: "{fakes.urls["pagerduty"]}/v2/enqueue"}}]
route: {{receiver: main}}
""")
    url = f"http://127.0.0.1:{port}/webhook"
    proc = start(config)
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", proc)

        accepted, posted = await post_until_gone(
            url,
            lambda n: firing_payload(1, f"term{n}"),
            HEADERS,
            workers=6,
            stop_when=lambda accepted: len(accepted) >= 30,
            stop=lambda: proc.send_signal(signal.SIGTERM),
        )
        # One SIGTERM, then wait, as Kubernetes does; a second one would cut the drain short.
        assert await asyncio.to_thread(proc.wait, 20) == 0, "a SIGTERM stop is a clean exit"
    finally:
        stop(proc)
    # The log's last line says the drain finished and the store closed.
    assert (tmp_path / "router.log").read_text().splitlines()[-1].split()[2] == "stopped"
    assert 30 <= len(accepted) < posted, "the SIGTERM should land mid-load"
    with sqlite3.connect(tmp_path / "state.db") as db:
        queued = {r[0] for r in db.execute("SELECT correlation_id FROM outbox")}
        states = dict(db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
    in_inbox = set(waiting_in_inbox(tmp_path / "state.db"))
    # Each payload answered 200 is planned (its notification in the outbox) or waits in the inbox.
    assert {a["correlation_id"] for a in accepted.values()} <= in_inbox | queued
    assert states.get("dead", 0) == 0

    fakes.pagerduty.delay_s = 0.0  # the rest is delivered after the restart, at full speed
    proc = start(config)
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        # Waited for (a generous 60 s): every accepted payload planned, every notification sent.
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            incidents, per_incident, states = notifications_in_store(tmp_path / "state.db")
            if incidents >= len(accepted) and states == {"sent"}:
                break
            await asyncio.sleep(0.1)
        assert incidents >= len(accepted) and states == {"sent"}
        assert per_incident == [1] * incidents
        assert len(fakes.pagerduty.events) == incidents, "each notification exactly once"
    finally:
        assert stop(proc) == 0


async def test_sighup_reloads_the_file(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "routes.yaml"
    body = """
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: {token}}}}}
storage: {{path: state.db}}
receivers: [{{name: first}}, {{name: second}}]
route: {{receiver: {root}}}
"""
    config.write_text(body.format(port=port, token=TOKEN, root="first"))
    proc = start(config, "--dry-run")
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        config.write_text(body.format(port=port, token=TOKEN, root="second"))
        proc.send_signal(signal.SIGHUP)
        async with aiohttp.ClientSession() as session:
            for attempt in range(100):
                async with session.post(
                    f"http://127.0.0.1:{port}/webhook",
                    headers=HEADERS,
                    data=firing_payload(1, f"hup{attempt}"),
                ) as resp:
                    cid = (await resp.json())["correlation_id"]
                base = f"http://127.0.0.1:{port}"
                decisions = (await planned_outcome(session, base, cid, HEADERS))["decisions"]
                if "second" in decisions:
                    break
                await asyncio.sleep(0.05)
        assert decisions == {"second": ["first"]}
    finally:
        assert stop(proc) == 0


async def test_no_log_line_contains_a_secret(tmp_path: Path) -> None:
    port, refused = free_port(), f"http://127.0.0.1:{free_port()}"
    secrets = {
        "bearer": TOKEN,
        "basic": "basic-auth-pass-987",
        "telegram": "987654:telegram-secret-token",
        "routing": "pagerduty-routing-key-0123456789",
        "webhook": f"{refused}/services/T0/B0/webhook-secret-path",
        "smtp": "smtp-password-xyz",
        "signing": "slack-signing-secret-abc",
        "tg_hook": "tg-webhook-secret-xyz",
    }
    config = tmp_path / "routes.yaml"
    config.write_text(f"""
server:
  listen: "127.0.0.1:{port}"
  auth: {{bearer_token: {secrets["bearer"]}, basic_auth: {{username: am, password: {secrets["basic"]}}}}}
storage: {{path: state.db}}
delivery: {{min_backoff: 100ms, max_backoff: 200ms}}
receivers:
  - name: main
    telegram_configs: [{{bot_token: "{secrets["telegram"]}", chat_id: 1, api_url: "{refused}"}}]
    pagerduty_configs: [{{routing_key: {secrets["routing"]}, url: "{refused}/v2/enqueue"}}]
    slack_configs: [{{webhook_url: "{secrets["webhook"]}"}}]
    email_configs: [{{to: a@example.com, from: b@example.com, smarthost: "127.0.0.1:{free_port()}",
                     auth_username: u, auth_password: {secrets["smtp"]}}}]
route: {{receiver: main}}
chatops:
  telegram: {{bot_token: "{secrets["telegram"]}", api_url: "{refused}", mode: polling,
             webhook_secret: {secrets["tg_hook"]}, allowed_chats: [1]}}
  slack: {{signing_secret: {secrets["signing"]}, team_id: T1, allowed_channels: [C1]}}
""")
    proc = start(config, "--log-format", "json", "--log-level", "debug")
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"http://127.0.0.1:{port}/webhook",
                headers=HEADERS,
                data=firing_payload(2, "secret"),
            ) as resp:
                assert resp.status == 200
            async with session.post(
                f"http://127.0.0.1:{port}/webhook",
                data=b"{}",
                headers={"Authorization": "Bearer wrong", "Content-Type": "application/json"},
            ):
                pass
            # Failed deliveries and Telegram retries get logged: wait (bounded: 20 s) until each
            # of the 4 channels recorded a failure, the Telegram bot's failed start is logged
            # and retries are (3 per channel: the retry path's lines are checked too).
            for _ in range(200):
                async with session.get(
                    f"http://127.0.0.1:{port}/api/v1/incidents", headers=HEADERS
                ) as resp:
                    api = await resp.text()
                logged = (tmp_path / "router.log").read_text()
                if (
                    api.count('"last_error":"') >= 4
                    and "telegram_chatops_unavailable" in logged
                    and logged.count('"event":"notification_retry"') >= 12
                ):
                    break
                await asyncio.sleep(0.1)
            assert api.count('"last_error":"') >= 4  # the failures are recorded ...
            for name, secret in secrets.items():
                assert secret not in api, (
                    f"the {name} secret is in the API's error texts"
                )  # ... masked
    finally:
        assert stop(proc) == 0
    log = (tmp_path / "router.log").read_text()
    lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    events = {line["event"] for line in lines}
    assert {"webhook_accepted", "notification_retry", "telegram_chatops_unavailable"} <= events
    assert all({"ts", "level", "event"} <= line.keys() for line in lines)
    accepted = next(line for line in lines if line["event"] == "webhook_accepted")
    retry = next(line for line in lines if line["event"] == "notification_retry")
    assert retry["correlation_id"] == accepted["correlation_id"]  # one id from webhook to channel
    for name, secret in secrets.items():
        assert secret not in log, f"the {name} secret leaked into the log"
