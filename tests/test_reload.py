"""POST /-/reload: the new file is validated in full first; a broken one changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from router.app import create_app
from router.config import load_config

from .harness import outcome
from .helpers import fixture_body

Client = TestClient[web.Request, web.Application]
AUTH = {"Authorization": "Bearer reload-token", "Content-Type": "application/json"}
CONFIG = """
server: {{auth: {{bearer_token: reload-token}}}}
storage: {{path: state.db}}
receivers: [{{name: first}}, {{name: second}}]
route: {{receiver: {root}}}
"""


async def routed_to(client: Client, group: str) -> dict[str, Any]:
    body = orjson.loads(fixture_body("firing-group-3-alerts"))
    body["groupKey"] = group
    resp = await client.post("/webhook", data=orjson.dumps(body), headers=AUTH)
    assert resp.status == 200
    decisions: dict[str, Any] = (
        await outcome(client, (await resp.json())["correlation_id"], AUTH)
    )["decisions"]
    return decisions


async def test_reload_switches_only_to_a_valid_config(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(CONFIG.format(root="first"))
    client = await aiohttp_client(create_app(load_config(path), config_path=str(path)))
    assert await routed_to(client, "g1") == {"first": ["first"]}

    broken = CONFIG.format(root="first").replace(
        "route: {receiver: first}", "route: {receiver: first, routes: [{matchers: ['a=~\"(\"']}]}"
    )
    path.write_text(broken)
    resp = await client.post("/-/reload", headers=AUTH)
    assert resp.status == 400
    answer = await resp.json()
    assert answer["error"] == "config not reloaded; the previous one stays"
    assert answer["problems"] == [
        f'{path}:5: route.routes[0].matchers[0]: invalid regex "(": missing )'
    ]
    assert await routed_to(client, "g2") == {"first": ["first"]}  # old routes still work
    metrics = await (await client.get("/metrics")).text()
    assert "alert_router_config_last_reload_successful 0.0" in metrics

    path.write_text(
        CONFIG.format(root="second").replace(
            "storage: {path: state.db}", "storage: {path: other.db}"
        )
    )
    resp = await client.post("/-/reload", headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["notes"] == [
        "storage.path changed: it takes effect at the next restart"
    ]
    assert await routed_to(client, "g3") == {"second": ["first"]}
    assert (
        "alert_router_config_last_reload_successful 1.0"
        in await (await client.get("/metrics")).text()
    )
    assert (await client.post("/-/reload")).status == 401


async def test_restart_notes_compare_with_what_runs(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(CONFIG.format(root="first"))
    client = await aiohttp_client(create_app(load_config(path), config_path=str(path)))

    async def reload_notes() -> list[str]:
        resp = await client.post("/-/reload", headers=AUTH)
        assert resp.status == 200
        notes: list[str] = (await resp.json())["notes"]
        return notes

    synchronous = "storage: {path: state.db, synchronous: full}"
    path.write_text(CONFIG.format(root="first").replace("storage: {path: state.db}", synchronous))
    note = "storage.synchronous changed: it takes effect at the next restart"
    assert await reload_notes() == [note]
    assert await reload_notes() == [note], "still not in effect: the router runs with 'normal'"
    path.write_text(CONFIG.format(root="first"))  # undone: the file says what runs again
    assert await reload_notes() == []


async def test_notifications_of_a_channel_kind_the_reload_removed_are_dead_letters(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> None:
    # Telegram unreachable: the notification waits a minute for its next attempt. The reload
    # removes every Telegram config: nothing would claim it again; it is a dead letter, and says so.
    path = tmp_path / "routes.yaml"
    telegram = (
        '[{name: first, telegram_configs: [{bot_token: "1:t", chat_id: 1,'
        ' api_url: "http://127.0.0.1:9"}]}, {name: second}]'
    )
    text = CONFIG.format(root="first") + "delivery: {min_backoff: 1m}\n"
    path.write_text(text.replace("[{name: first}, {name: second}]", telegram))
    client = await aiohttp_client(create_app(load_config(path), config_path=str(path)))
    await routed_to(client, "g1")

    async def telegram_notes() -> list[dict[str, Any]]:
        resp = await client.get("/api/v1/incidents", headers=AUTH)
        (incident,) = (await resp.json())["incidents"]
        notes: list[dict[str, Any]] = incident["notifications"]
        return notes

    deadline = time.monotonic() + 10
    while [(n["state"], n["attempts"]) for n in await telegram_notes()] != [("queued", 1)]:
        assert time.monotonic() < deadline, await telegram_notes()
        await asyncio.sleep(0.02)

    path.write_text(text)
    assert (await client.post("/-/reload", headers=AUTH)).status == 200
    (note,) = await telegram_notes()
    assert (note["channel"], note["state"], note["last_error"]) == (
        "telegram",
        "dead",
        "its channel kind is no longer in the config (no receiver has one); kinds configured: none",
    )
    metrics = await (await client.get("/metrics")).text()
    assert (
        'alert_router_notifications_dead_total{channel="telegram",receiver="first"} 1.0' in metrics
    )
