"""POST /-/reload: the new file is validated in full first; a broken one changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from router.app import create_app, utc_now
from router.config import RouterConfig, load_config, parse_config
from router.delivery import Outbox
from router.metrics import Metrics
from router.outcomes import Outcomes
from router.pipeline import Pipeline
from router.planner import Planner
from router.reload import Reloader, build_renderer
from router.store.postgres import PostgresStore

from .harness import firing_payload, outcome
from .helpers import fixture_body, open_core

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


# ---------------------------------------------------------------- a rolling update (PostgreSQL)

NEW = parse_config(
    "receivers: [{name: r, slack_configs: [{bot_token: x, channel: c0}, {bot_token: x,"
    " channel: c1}], telegram_configs: [{bot_token: '1:x', chat_id: 7}]}]\n"
    "route: {receiver: r}\n"
)
OLD = parse_config(
    "receivers: [{name: r, slack_configs: [{bot_token: x, channel: c0}]}]\nroute: {receiver: r}\n"
)


def _replica(store: PostgresStore, config: RouterConfig) -> tuple[Reloader, Outbox]:
    """The reloader and outbox a `serve` replica of `config` on `store` has (dry-run channels)."""
    metrics, wake = Metrics(), asyncio.Event()
    planner = Planner(
        store,
        lambda new_id: Pipeline(config, new_id),
        wake_outbox=wake,
        outcomes=Outcomes(),
        metrics=metrics,
    )
    outbox = Outbox(store, {}, utc_now, metrics=metrics, wake=wake, shared=True)
    reloader = Reloader(
        config,
        build_renderer(config),
        path=None,
        planner=planner,
        outbox=outbox,
        metrics=metrics,
        clock=utc_now,
        dry_run=True,
    )
    return reloader, outbox


async def _states(url: str) -> dict[str, str]:
    admin = await asyncpg.connect(url)
    try:
        rows = await admin.fetch("SELECT channel, channel_index, state FROM outbox")
    finally:
        await admin.close()
    return {f"{r[0]}{r[1]}": r[2] for r in rows}


async def test_a_replica_of_the_older_config_leaves_new_destinations_to_a_replica_that_has_them(
    postgres_url: str,
) -> None:
    """During a rolling update a replica still on the old config (no second Slack channel, no
    Telegram) claims and sends only its own destinations: the others' rows wait, not dead
    letters, for a replica of the new config (both used to be dead-lettered: the kind at the
    start, the destination as claimed)."""
    core = await open_core(PostgresStore(postgres_url), NEW)
    try:
        await core.ingest(firing_payload(1, "g1"), utc_now(), "c1")
    finally:
        await core.aclose()
    old_store, new_store = PostgresStore(postgres_url), PostgresStore(postgres_url)
    await old_store.open()
    await new_store.open()
    old, old_outbox = _replica(old_store, OLD)
    new, new_outbox = _replica(new_store, NEW)
    try:
        await old.equip_outbox()
        old_outbox.task = asyncio.create_task(old_outbox.run())
        async with asyncio.timeout(30):  # its first claim took every row it would take
            while (await _states(postgres_url))["slack0"] != "sent":
                await asyncio.sleep(0.05)
        assert await _states(postgres_url) == {
            "slack0": "sent",
            "slack1": "queued",
            "telegram0": "queued",
        }
        await new.equip_outbox()
        new_outbox.task = asyncio.create_task(new_outbox.run())
        async with asyncio.timeout(30):
            while set((await _states(postgres_url)).values()) != {"sent"}:
                assert "dead" not in (await _states(postgres_url)).values()
                await asyncio.sleep(0.05)
    finally:
        for outbox in (old_outbox, new_outbox):
            await outbox.drain(timedelta(seconds=5))
        await old_store.aclose()
        await new_store.aclose()


async def test_rows_no_replica_sent_within_max_age_are_dead_letters(postgres_url: str) -> None:
    """The rule that ends a destination removed for good: its rows older than delivery.max_age
    (1 h) are dead-lettered by a replica whose config lacks it; the rows it has stay queued."""
    core = await open_core(PostgresStore(postgres_url), NEW)
    try:
        await core.ingest(firing_payload(1, "g1"), utc_now() - timedelta(hours=2), "c1")
    finally:
        await core.aclose()
    store = PostgresStore(postgres_url)
    await store.open()
    old, _ = _replica(store, OLD)
    try:
        await old.equip_outbox()
    finally:
        await store.aclose()
    assert await _states(postgres_url) == {
        "slack0": "queued",
        "slack1": "dead",
        "telegram0": "dead",
    }
