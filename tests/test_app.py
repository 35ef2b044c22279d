"""create_app(): the routes it serves, the store and workers it opens at start and closes at the
end, and the config a reload switches to or keeps; on the real app with aiohttp's test server."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from router.app import COMMANDS, OUTBOX, PLANNER, RELOADER, create_app
from router.config import load_config, parse_config
from router.errors import StoreError
from router.state import Destination

from .harness import firing_payload, outcome

Client = TestClient[web.Request, web.Application]
AUTH = {"Authorization": "Bearer t", "Content-Type": "application/json"}
CONFIG = """
server: {{auth: {{bearer_token: t}}}}
storage: {{path: "{db}"}}
receivers:
  - name: main
    telegram_configs: [{{bot_token: "123456:token", chat_id: 1, api_url: "http://127.0.0.1:9"}}]
  - {{name: second}}
route: {{receiver: {root}}}
"""
CHATOPS = """
chatops:
  telegram: {bot_token: "123456:token", webhook_secret: s3cret, allowed_chats: [1]}
  slack: {signing_secret: 0123456789abcdef, team_id: T000, allowed_channels: [C0ALERTS]}
"""
ROUTES = {
    ("POST", "/webhook"),
    ("POST", "/-/reload"),
    ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/incidents"),
    ("GET", "/api/v1/payloads/{correlation_id}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
}
CHATOPS_ROUTES = {
    ("POST", "/telegram/webhook"),
    ("POST", "/slack/commands"),
    ("POST", "/slack/interactions"),
}


def routes(app: web.Application) -> set[tuple[str, str]]:
    return {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }


@pytest.mark.parametrize(("extra", "expected"), [("", ROUTES), (CHATOPS, ROUTES | CHATOPS_ROUTES)])
def test_the_routes_are_those_the_config_asks_for(
    tmp_path: Path, extra: str, expected: set[tuple[str, str]]
) -> None:
    config = parse_config(CONFIG.format(db=tmp_path / "state.db", root="main") + extra)
    app = create_app(config)
    assert routes(app) == expected
    assert (COMMANDS in app) == bool(extra), "the chat-ops commands exist with chat-ops only"


async def test_the_store_and_workers_run_while_the_app_does(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(CONFIG.format(db=tmp_path / "state.db", root="second"))
    app = create_app(load_config(path), config_path=str(path))
    outbox = app[OUTBOX]
    assert outbox.task is None and outbox.channels == {}, "nothing runs before the start"
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/webhook", data=firing_payload(2, "g"), headers=AUTH)
        assert resp.status == 200
        answer = await outcome(client, (await resp.json())["correlation_id"], AUTH)
        assert answer["state"] == "planned"
        assert len(app[PLANNER].state.alerts) == 2
        assert outbox.task is not None and not outbox.task.done()
        assert set(outbox.channels) == {Destination("main", "telegram", 0)}
        assert (await client.get("/readyz")).status == 200
        assert signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL, "SIGHUP reloads"

        # The store is this router's alone while it runs: a second one cannot start on it.
        second = TestServer(create_app(load_config(path)))
        with pytest.raises(StoreError, match="another alert-router"):
            await second.start_server()
        await second.close()
    assert outbox.task.done()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL

    # Closed at the end: the next router opens the store and finds the alerts it left.
    again = create_app(load_config(path))
    async with TestClient(TestServer(again)):
        assert len(again[PLANNER].state.alerts) == 2


async def test_a_reload_switches_the_config_and_channels_or_keeps_both(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> None:
    path = tmp_path / "routes.yaml"
    text = CONFIG.format(db=tmp_path / "state.db", root="main")
    path.write_text(text)
    client = await aiohttp_client(create_app(load_config(path), config_path=str(path)))
    reloader, outbox = client.app[RELOADER], client.app[OUTBOX]
    before, channels = reloader.config, outbox.channels

    path.write_text(text.replace("  - {name: second}", "  - {name: second, sec: 1}"))
    assert (await client.post("/-/reload", headers=AUTH)).status == 400
    assert reloader.config is before and outbox.channels is channels

    path.write_text(
        text.replace("chat_id: 1,", "chat_id: 2,").replace(
            "  - {name: second}",
            '  - name: second\n    telegram_configs: [{bot_token: "1:t", chat_id: 3}]',
        )
    )
    assert (await client.post("/-/reload", headers=AUTH)).status == 200
    assert reloader.config is not before and reloader.started is before
    assert {d: c.config.chat_id for d, c in outbox.channels.items()} == {
        Destination("main", "telegram", 0): 2,
        Destination("second", "telegram", 0): 3,
    }


async def test_sighup_reloads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(CONFIG.format(db=tmp_path / "state.db", root="main"))
    app = create_app(load_config(path), config_path=str(path))
    async with TestClient(TestServer(app)):
        path.write_text(CONFIG.format(db=tmp_path / "state.db", root="second"))
        signal.raise_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while app[RELOADER].config.route.receiver != "second":
            assert time.monotonic() < deadline, "SIGHUP did not reload within 10 s"
            await asyncio.sleep(0.01)
