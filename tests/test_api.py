"""The read API pages its lists: limit (default and maximum), cursor, filters by status and
receiver; a page's size is bounded however many alerts the store holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from router import api
from router.app import create_app
from router.config import parse_config

from .harness import firing_payload, outcome

Client = TestClient[web.Request, web.Application]
AUTH = {"Authorization": "Bearer t", "Content-Type": "application/json"}
CONFIG = """
server: {{auth: {{bearer_token: t}}}}
storage: {{path: "{db}"}}
receivers: [{{name: main}}, {{name: db}}]
route: {{receiver: main, routes: [{{matchers: ['group=~"db.*"'], receiver: db}}]}}
"""


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Client:
    config = parse_config(CONFIG.format(db=tmp_path / "state.db"))
    client = await aiohttp_client(create_app(config, dry_run=True))
    for group, n in (("web1", 7), ("web2", 5), ("db1", 4)):  # 16 alerts, 3 incidents
        resp = await client.post("/webhook", data=firing_payload(n, group), headers=AUTH)
        await outcome(client, (await resp.json())["correlation_id"])
    return client


async def pages(client: Client, path: str, query: str) -> list[dict[str, Any]]:
    """Every page of `path`, following `next` (bounded)."""
    items: list[dict[str, Any]] = []
    url = f"{path}?{query}"
    for _ in range(50):
        resp = await client.get(url, headers=AUTH)
        assert resp.status == 200, await resp.text()
        page = orjson.loads(await resp.read())
        items += page[path.rsplit("/", 1)[1]]
        if page["next"] is None:
            return items
        url = f"{path}?{query}&cursor={page['next']}"
    raise AssertionError("more than 50 pages")


async def test_alerts_are_paged_by_fingerprint_and_filtered(client: Client) -> None:
    everything = await pages(client, "/api/v1/alerts", "")
    assert len(everything) == 16
    fingerprints = [a["fingerprint"] for a in everything]
    assert fingerprints == sorted(fingerprints)
    for limit in (1, 5, 16, 17):
        assert await pages(client, "/api/v1/alerts", f"limit={limit}") == everything
    db = await pages(client, "/api/v1/alerts", "limit=3&receiver=db")
    assert len(db) == 4 and all(a["receivers"] == ["db"] for a in db)
    assert await pages(client, "/api/v1/alerts", "status=resolved") == []
    assert len(await pages(client, "/api/v1/alerts", "status=firing&limit=2")) == 16


async def test_incidents_are_paged_newest_first(client: Client) -> None:
    everything = await pages(client, "/api/v1/incidents", "")
    assert [len(i["alerts"]) for i in everything] == [4, 5, 7]
    assert await pages(client, "/api/v1/incidents", "limit=1") == everything
    db = await pages(client, "/api/v1/incidents", "receiver=db&status=firing")
    assert [i["receiver"] for i in db] == ["db"]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("limit=0", f"limit must be an integer from 1 to {api.MAX_LIMIT}"),
        (f"limit={api.MAX_LIMIT + 1}", f"limit must be an integer from 1 to {api.MAX_LIMIT}"),
        ("limit=ten", f"limit must be an integer from 1 to {api.MAX_LIMIT}"),
        ("status=acked", "status must be one of: firing, resolved"),
        ("cursor=%ff%fe", "cursor is not one this API gave (use the `next` of the last page)"),
        ("cursor=e30=", "cursor is not one this API gave (use the `next` of the last page)"),
    ],
)
async def test_bad_page_queries_are_400(client: Client, query: str, error: str) -> None:
    for path in ("/api/v1/alerts", "/api/v1/incidents"):
        resp = await client.get(f"{path}?{query}", headers=AUTH)
        assert (resp.status, (await resp.json())["error"]) == (400, error)


async def test_a_cursor_of_the_other_list_is_400(client: Client) -> None:
    # It was read as a key of this list: a page of alerts after the fingerprint
    # "2026-11-30T16:21:22…", or no incidents at all, and a 200.
    paths = ("/api/v1/alerts", "/api/v1/incidents")
    cursors = [
        (await (await client.get(f"{p}?limit=1", headers=AUTH)).json())["next"] for p in paths
    ]
    assert all(cursors)
    for path, cursor in zip(paths, reversed(cursors), strict=True):
        resp = await client.get(f"{path}?cursor={cursor}", headers=AUTH)
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"].startswith("cursor is not one this API gave")


async def test_a_page_is_bounded_by_the_default_limit(client: Client) -> None:
    resp = await client.post(
        "/webhook", data=firing_payload(api.DEFAULT_LIMIT, "big"), headers=AUTH
    )
    await outcome(client, (await resp.json())["correlation_id"])
    page = await (await client.get("/api/v1/alerts", headers=AUTH)).json()
    assert len(page["alerts"]) == api.DEFAULT_LIMIT and page["next"]
