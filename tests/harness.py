"""The test harness for whole-app tests: fake services, a real SMTP server, the app, waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.controller import Controller

from router.app import create_app
from router.config import parse_config

from .fakes.email import Mailbox, check_password
from .fakes.pagerduty import FakePagerDuty
from .fakes.slack import FakeSlack
from .fakes.telegram import FakeTelegram
from .helpers import fixture_body, free_port

Client = TestClient[web.Request, web.Application]
AUTH = {"Authorization": "Bearer t", "Content-Type": "application/json"}


@dataclass
class Fakes:
    telegram: FakeTelegram
    slack: FakeSlack
    pagerduty: FakePagerDuty
    mailbox: Mailbox
    urls: dict[str, str]


async def start_fakes(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Fakes]:
    telegram, slack, pagerduty, mailbox = FakeTelegram(), FakeSlack(), FakePagerDuty(), Mailbox()
    servers = {
        name: await aiohttp_server(f.app())
        for name, f in (("telegram", telegram), ("slack", slack), ("pagerduty", pagerduty))
    }
    smtp_port = free_port()
    # Plain-text AUTH is allowed on this loopback test server only; production uses STARTTLS.
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=smtp_port,
        authenticator=check_password,
        auth_require_tls=False,
    )
    controller.start()
    urls = {name: str(s.make_url("")) for name, s in servers.items()}
    urls["smtp"] = f"127.0.0.1:{smtp_port}"
    urls["refused"] = f"http://127.0.0.1:{free_port()}"
    try:
        yield Fakes(telegram, slack, pagerduty, mailbox, urls)
    finally:
        controller.stop()


def config_text(fakes: Fakes, db: Path, receivers: str, extra: str = "") -> str:
    return with_fakes(
        f"""
server: {{auth: {{bearer_token: t}}}}
storage: {{path: "{db}"}}
delivery: {{min_backoff: 50ms, max_backoff: 1s, max_age: 1m, storm_threshold: 8}}
receivers:
{receivers}
{"" if "route:" in extra else "route: {receiver: main}"}
{extra}
""",
        fakes,
    )


def with_fakes(text: str, fakes: Fakes) -> str:
    """`text` with TELEGRAM, SLACK, PAGERDUTY, SMTPHOST and REFUSED replaced by the fakes'
    addresses (REFUSED: a port nothing listens on)."""
    return (
        text.replace("TELEGRAM", fakes.urls["telegram"])
        .replace("SLACK", fakes.urls["slack"] + "/api/")
        .replace("PAGERDUTY", fakes.urls["pagerduty"] + "/v2/enqueue")
        .replace("SMTPHOST", fakes.urls["smtp"])
        .replace("REFUSED", fakes.urls["refused"])
    )


TELEGRAM_ONLY = """
  - name: main
    telegram_configs: [{bot_token: "123456:good-token", chat_id: 1001, api_url: TELEGRAM}]
"""

ALL_FOUR = """
  - name: main
    telegram_configs: [{bot_token: "123456:good-token", chat_id: 1001, api_url: TELEGRAM, message_thread_id: 7}]
    slack_configs: [{bot_token: xoxb-good, channel: "#alerts", api_url: SLACK}]
    email_configs: [{to: oncall@example.com, from: alert-router@example.com, smarthost: SMTPHOST, require_tls: false,
                     headers: {X-Team: sre}}]
    pagerduty_configs: [{routing_key: R0UTINGKEY0000000000000000000000, url: PAGERDUTY}]
"""


def client_factory(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> Callable[..., Awaitable[Client]]:
    async def make(fakes: Fakes, receivers: str = ALL_FOUR, extra: str = "") -> Client:
        config = parse_config(config_text(fakes, tmp_path / "state.db", receivers, extra))
        return await aiohttp_client(create_app(config))

    return make


async def postgres_client(
    aiohttp_client: Callable[..., Awaitable[Client]],
    fakes: Fakes,
    tmp_path: Path,
    url: str,
    receivers: str = ALL_FOUR,
    extra: str = "",
) -> Client:
    """The app as make_client builds it, with its state in the PostgreSQL database at `url`
    (several clients on one URL: several replicas)."""
    sqlite = f'storage: {{path: "{tmp_path / "state.db"}"}}'
    text = config_text(fakes, tmp_path / "state.db", receivers, extra)
    assert sqlite in text
    text = text.replace(sqlite, f'storage: {{url: "{url}"}}')
    return await aiohttp_client(create_app(parse_config(text)))


async def post(client: Client, body: bytes) -> dict[str, Any]:
    """POST /webhook, then wait (bounded) until the payload is planned; return its outcome."""
    resp = await client.post("/webhook", data=body, headers=AUTH)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = orjson.loads(await resp.read())
    return await outcome(client, answer["correlation_id"])


async def outcome(
    client: Client, correlation_id: str, headers: dict[str, str] = AUTH, timeout_s: float = 10.0
) -> dict[str, Any]:
    """GET /api/v1/payloads/<id> until the payload's state is no longer pending (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = await client.get(f"/api/v1/payloads/{correlation_id}", headers=headers)
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = orjson.loads(await resp.read())
        if answer["state"] != "pending":
            return answer
        assert time.monotonic() < deadline, f"{correlation_id} still pending after {timeout_s}s"
        await asyncio.sleep(0.01)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Return once `condition()` holds; fail after `timeout_s` (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not so after {timeout_s}s"
        await asyncio.sleep(0.02)


async def settled(client: Client, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    """Every notification, once none is queued or being sent any more (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        incidents = (await (await client.get("/api/v1/incidents", headers=AUTH)).json())[
            "incidents"
        ]
        notes = [n | {"incident": i["id"]} for i in incidents for n in i["notifications"]]
        if notes and all(n["state"] in ("sent", "dead") for n in notes):
            return notes
        await asyncio.sleep(0.05)
    raise AssertionError(f"not settled in {timeout_s}s: {notes}")


def firing_payload(
    n_alerts: int, group: str, severity: str = "critical", description: str = ""
) -> bytes:
    data = orjson.loads(fixture_body("firing-group-3-alerts"))
    template = data["alerts"][0]
    data["alerts"] = []
    for i in range(n_alerts):
        alert = orjson.loads(orjson.dumps(template))
        alert["labels"].update(instance=f"host-{i}:9100", severity=severity, group=group)
        alert["annotations"]["description"] = description or alert["annotations"]["description"]
        alert["fingerprint"] = f"{group[:8]:>08}{i:08x}"
        data["alerts"].append(alert)
    data["groupKey"] = f'{{}}:{{group="{group}"}}'
    data["commonLabels"] = {"alertname": "HighLatency", "severity": severity, "group": group}
    return orjson.dumps(data)
