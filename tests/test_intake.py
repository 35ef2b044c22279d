"""POST /webhook through the real app: auth, limits, errors that say what is wrong, durability."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from router.app import PLANNER, create_app
from router.config import parse_config
from router.intake import INTAKE

from .harness import firing_payload, outcome
from .helpers import fixture_body

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
TOKEN = "example-bearer-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

CONFIG = """
server:
  max_body_bytes: 65536
  auth:
    bearer_token: example-bearer-token
    basic_auth: {{username: alertmanager, password: example-password}}
storage: {{path: "{db}"}}
receivers:
  - name: slack
    slack_configs: [{{bot_token: xoxb-1, channel: "#alerts"}}]
route: {{receiver: slack}}
"""


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    config = parse_config(CONFIG.format(db=tmp_path / "state.db"))
    return await aiohttp_client(create_app(config, dry_run=True))


async def post(
    client: Client, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """POST /webhook; for a 200, the answer also holds the payload's outcome once planned."""
    resp = await client.post("/webhook", data=body, headers=AUTH if headers is None else headers)
    answer = orjson.loads(await resp.read())
    if resp.status == 200:
        answer |= await outcome(client, answer["correlation_id"], AUTH)
    return resp.status, answer


async def test_accepts_a_real_alertmanager_payload(client: Client) -> None:
    status, body = await post(client, fixture_body("firing-group-3-alerts"))
    assert status == 200
    assert body["status"] == "accepted" and body["alerts"] == 3 and body["queued"] == 1
    assert body["state"] == "planned" and body["decisions"] == {"slack": ["first"]}
    assert len(body["incidents"]) == 1 and len(body["incidents"][0]) == 5
    resp = await client.get(f"/api/v1/payloads/{body['correlation_id']}")
    assert resp.status == 401  # the outcome API is behind the webhook's auth
    resp = await client.get("/api/v1/payloads/0123456789abcdef", headers=AUTH)
    assert resp.status == 404 and "unknown correlation id" in (await resp.json())["error"]


async def test_basic_auth_as_alertmanager_sends_it(client: Client) -> None:
    headers = {
        "Authorization": "Basic YWxlcnRtYW5hZ2VyOmV4YW1wbGUtcGFzc3dvcmQ=",
        "Content-Type": "application/json",
    }
    status, _ = await post(client, fixture_body("truncated-max-alerts-2"), headers)
    assert status == 200


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        f"bearer {TOKEN}x",
        "Basic YWxlcnRtYW5hZ2VyOndyb25n",
        "Basic !!!",
        TOKEN,
    ],
)
async def test_bad_auth_is_401_with_a_challenge(client: Client, authorization: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    resp = await client.post("/webhook", data=fixture_body("resolved-group"), headers=headers)
    assert resp.status == 401
    assert (
        resp.headers["WWW-Authenticate"]
        == 'Bearer realm="alert-router", Basic realm="alert-router"'
    )
    assert (await resp.json())["reason"] == "unauthorized"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason", "error"),
    [
        (b"{not json", "application/json", 400, "invalid_json", "invalid JSON: "),
        (b"", "application/json", 400, "invalid_json", "invalid JSON: "),
        (b"[]", "application/json", 422, "schema", "not an Alertmanager v4 payload: (body): "),
        (
            b"{}",
            "text/plain",
            415,
            "content_type",
            "expected Content-Type application/json, got 'text/plain'",
        ),
        (
            b'{"version": "3"}',
            "application/json",
            422,
            "schema",
            "not an Alertmanager v4 payload: version: ",
        ),
    ],
)
async def test_bad_bodies_get_a_clear_4xx(
    client: Client, body: bytes, content_type: str, status: int, reason: str, error: str
) -> None:
    got, answer = await post(client, body, {**AUTH, "Content-Type": content_type})
    assert (got, answer["reason"]) == (status, reason)
    assert answer["error"].startswith(error) and "Invalid JSON" not in answer["error"]


async def test_schema_errors_name_the_failing_field(client: Client) -> None:
    data = orjson.loads(fixture_body("firing-group-3-alerts"))
    data["alerts"][1]["startsAt"] = "yesterday"
    del data["alerts"][2]["fingerprint"]
    status, body = await post(client, orjson.dumps(data))
    assert status == 422
    assert [p["path"] for p in body["problems"]] == ["alerts[1].startsAt", "alerts[2].fingerprint"]
    assert body["error"].startswith(
        "not an Alertmanager v4 payload: alerts[1].startsAt: Input should be"
    )


async def test_oversized_body_is_413(client: Client) -> None:
    data = orjson.loads(fixture_body("firing-group-3-alerts"))
    data["alerts"][0]["annotations"]["description"] = "x" * 70_000
    status, body = await post(client, orjson.dumps(data))
    assert status == 413
    assert body["error"] == "body larger than server.max_body_bytes (65536 bytes), counted decoded"


async def test_only_what_can_be_read_back_is_accepted(client: Client) -> None:
    # Non-standard JSON in a field alert-router ignores, or a count the store cannot hold:
    # refused with a reason, not accepted and then unreadable or set aside.
    body = fixture_body("firing-group-3-alerts")
    for bad in (
        b'"x": NaN, "externalURL"',
        b'"x": [-Infinity, 1e999, 18446744073709551616], "externalURL"',
    ):
        got, answer = await post(client, body.replace(b'"externalURL"', bad, 1))
        assert (got, answer) == (
            400,
            answer
            | {
                "reason": "invalid_json",
                "error": (
                    "invalid JSON: numbers must be finite and fit in 64 bits (NaN, Infinity and larger"
                    " integers are refused)"
                ),
            },
        )
    # A lone surrogate is refused by orjson too, which says so (it is not about numbers).
    got, answer = await post(client, body.replace(b"checkout-0", b"\\ud800", 1))
    assert got == 400
    assert answer["error"].startswith("invalid JSON: no low surrogate in string: line 1 ")
    data = orjson.loads(body) | {"truncatedAlerts": 2**63}  # a Go uint64 may be this large
    got, answer = await post(client, orjson.dumps(data))
    assert (got, answer["reason"]) == (422, "schema")
    assert answer["error"] == (
        "not an Alertmanager v4 payload: truncatedAlerts: Input should be less than or equal"
        " to 2147483647"
    )


@pytest.mark.slow
async def test_the_largest_groups_are_accepted_by_default(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    # Alertmanager does not retry a 4xx: a group refused for its size would never be notified.
    # 7,000 alerts (4.5 MB) from one group with max_alerts: 0, under the default limit.
    text = CONFIG.format(db=tmp_path / "state.db").replace("  max_body_bytes: 65536\n", "")
    client = await aiohttp_client(create_app(parse_config(text), dry_run=True))
    body = firing_payload(7_000, "storm")
    assert len(body) > 4 * 1024 * 1024
    resp = await client.post("/webhook", data=io.BytesIO(body), headers=AUTH)
    assert resp.status == 200, await resp.text()
    answer = await outcome(client, (await resp.json())["correlation_id"], AUTH, timeout_s=60)
    assert (answer["alerts"], answer["queued"]) == (7_000, 1)


async def test_the_same_payload_twice_queues_one_notification(client: Client) -> None:
    first = await post(client, fixture_body("firing-group-3-alerts"))
    second = await post(client, fixture_body("firing-group-3-alerts"))
    assert (first[1]["queued"], second[1]["queued"]) == (1, 0)
    assert first[1]["incidents"] == second[1]["incidents"]


async def test_dry_run_delivers_and_the_read_api_shows_it(client: Client) -> None:
    await post(client, fixture_body("firing-group-3-alerts"))
    for _ in range(100):  # the outbox worker is woken at once; 5 s at most
        resp = await client.get("/api/v1/incidents", headers=AUTH)
        incident = (await resp.json())["incidents"][0]
        if incident["notifications"][0]["state"] == "sent":
            break
        await asyncio.sleep(0.05)
    assert incident["notifications"][0] | {"created_at": None, "sent_at": None} == {
        "id": 1,
        "channel": "slack",
        "channel_index": 0,
        "reason": "first",
        "state": "sent",
        "attempts": 1,
        "last_error": None,
        "created_at": None,
        "sent_at": None,
    }
    assert incident["status"] == "firing" and len(incident["alerts"]) == 3

    alerts = (await (await client.get("/api/v1/alerts", headers=AUTH)).json())["alerts"]
    assert {a["fingerprint"] for a in alerts} == set(incident["alerts"])
    assert all(a["receivers"] == ["slack"] and a["endsAt"] is None for a in alerts)

    assert (await client.get("/api/v1/alerts")).status == 401
    assert (await client.get("/healthz")).status == 200
    ready = await (await client.get("/readyz")).json()
    replica = ready.pop("replica")  # host:pid:random
    assert replica.split(":")[1] == str(os.getpid()) and len(replica.split(":")[2]) == 6
    # SQLite: the one router is the planner, of the lease's only epoch.
    assert ready == {"status": "ready", "config": "<memory>", "role": "planner", "epoch": 1}


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another process's exclusive lock on the SQLite file at `path`, for the block."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_a_locked_store_answers_503_and_the_retry_succeeds(
    client: Client, tmp_path: Path
) -> None:
    # Another process holding the store's write lock (a backup tool, say): our commit waits
    # for it for 5 s, then is refused; Alertmanager must retry (so this takes that long).
    with locked(tmp_path / "state.db"):
        status, body = await post(client, fixture_body("firing-group-3-alerts"))
    assert (status, body["reason"]) == (503, "store")
    status, body = await post(client, fixture_body("firing-group-3-alerts"))
    assert (status, body["queued"]) == (200, 1)


async def test_a_briefly_locked_store_holds_the_answer_and_serves_meanwhile(
    client: Client, tmp_path: Path
) -> None:
    # A lock held for a moment (a backup tool, say): the webhook waits for
    # it instead of failing, and the event loop is not blocked meanwhile (the health check is
    # answered while the webhook waits).
    intake = client.app[INTAKE]
    commit, committing = intake.accept, asyncio.Event()

    async def accept(*args: Any) -> None:  # the real commit; says when it starts
        committing.set()
        await commit(*args)

    intake.accept = accept
    with locked(tmp_path / "state.db"):
        webhook = asyncio.create_task(post(client, fixture_body("firing-group-3-alerts")))
        await asyncio.wait_for(committing.wait(), 5)  # the commit started under the lock
        health = await client.get("/healthz")
        assert health.status == 200
        assert not webhook.done(), "answered while the webhook waits for the lock"
    status, body = await webhook
    assert (status, body["queued"]) == (200, 1)


async def test_a_full_backlog_answers_503_with_retry_after(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    # max_backlog 1: payloads accepted together are planned one slice at a time, and what
    # comes in meanwhile is refused with Retry-After; nothing accepted is lost.
    text = CONFIG.format(db=tmp_path / "state.db").replace(
        "server:\n", "server:\n  max_backlog: 1\n"
    )
    client = await aiohttp_client(create_app(parse_config(text), dry_run=True))
    refused: list[Any] = []
    accepted: list[str] = []
    for wave in range(10):  # bounded: stop at the first wave that meets a full backlog
        bodies = [firing_payload(50, f"w{wave}-{i}") for i in range(40)]
        responses = await asyncio.gather(
            *(client.post("/webhook", data=b, headers=AUTH) for b in bodies)
        )
        for resp in responses:
            answer = await resp.json()
            if resp.status == 503:
                refused.append((resp.headers.get("Retry-After"), answer))
            else:
                accepted.append(answer["correlation_id"])
        if refused:
            break
    assert refused, "no payload met a full backlog"
    retry_after, answer = refused[0]
    assert retry_after == "5" and answer["reason"] == "backlog"
    assert "server.max_backlog 1" in answer["error"]
    for cid in accepted:  # everything answered 200 is planned
        assert (await outcome(client, cid, AUTH))["state"] == "planned"


@pytest.mark.parametrize("max_backlog", [1, 3])
async def test_concurrent_webhooks_never_pass_a_full_backlog_together(
    aiohttp_client: MakeClient, tmp_path: Path, max_backlog: int
) -> None:
    # The planner stopped: the backlog only grows. 20 payloads at once must not all pass the
    # bound before the first of them is committed; the 200s never exceed server.max_backlog.
    text = CONFIG.format(db=tmp_path / "state.db").replace(
        "server:\n", f"server:\n  max_backlog: {max_backlog}\n"
    )
    client = await aiohttp_client(create_app(parse_config(text), dry_run=True))
    planner = client.app[PLANNER]
    await planner.aclose()
    bodies = [firing_payload(5, f"c{i}") for i in range(20)]
    responses = await asyncio.gather(
        *(client.post("/webhook", data=b, headers=AUTH) for b in bodies)
    )
    answers = [(resp.status, (await resp.json()).get("reason")) for resp in responses]
    accepted = [a for a in answers if a[0] == 200]
    assert 1 <= len(accepted) <= max_backlog, answers
    assert all(a == (503, "backlog") for a in answers if a[0] != 200), answers
    assert planner.backlog == len(accepted) <= max_backlog


async def _partial_post(
    port: int, path: str, length: int, sent: bytes, *, auth: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sent the head of a POST with Content-Length `length` and `sent` of
    its body; (reader, writer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if auth:
        head += f"Authorization: Bearer {TOKEN}\r\n"
    writer.write(f"{head}Content-Length: {length}\r\n\r\n".encode() + sent)
    await writer.drain()
    return reader, writer


async def _status(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers of the answer on `reader` (bounded: 10 s)."""
    async with asyncio.timeout(10):
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def test_bodies_in_flight_are_bounded_and_webhooks_keep_their_own_budget(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    # Before, nothing bounded how many bodies were held at once: 1,000 connections sending a
    # 1 MiB body each to a chat-ops path (read before any credential) held 1 GiB.
    text = CONFIG.format(db=tmp_path / "state.db").replace(
        "max_body_bytes: 65536", "max_body_bytes: 65536\n  max_body_bytes_in_flight: 131072"
    )
    client = await aiohttp_client(create_app(parse_config(text), dry_run=True))
    port = client.port
    assert port is not None
    body = fixture_body("firing-group-3-alerts")
    padded = body + b" " * (60_000 - len(body))  # valid JSON of 60,000 bytes
    # Two webhooks hold 2 x 50,000 bytes of their bodies; a third's 50,000 would pass 131,072.
    held = [await _partial_post(port, "/webhook", 60_000, padded[:50_000]) for _ in range(2)]
    conns = list(held)
    answers: list[asyncio.Task[tuple[int, dict[str, str]]]] = []
    try:
        third = await _partial_post(port, "/webhook", 60_000, padded[:50_000])
        conns.append(third)
        status, headers = await _status(third[0])
        assert (status, headers["retry-after"]) == (503, "5")
        # The first one finishes: 200, and its bytes are given back for the next webhook.
        held[0][1].write(padded[50_000:])
        assert (await _status(held[0][0]))[0] == 200
        status, answer = await post(client, body)
        assert status == 200 and answer["state"] == "planned"
        # Unauthenticated clients fill their own budget (32 MiB for every other path; each
        # holds its bytes until serving.BODY_TIMEOUT) ...
        chunk = b"x" * (1024 * 1024 - 1)
        others = [
            await _partial_post(port, "/slack/commands", 1024 * 1024, chunk, auth=False)
            for _ in range(40)
        ]
        conns += others
        answers = [asyncio.create_task(_status(reader)) for reader, _ in others]
        done, _ = await asyncio.wait(answers, return_when=asyncio.FIRST_COMPLETED, timeout=10)
        assert done and {t.result()[0] for t in done} == {503}
        assert sum(not t.done() for t in answers) >= 32  # the others are still being read
        # ... and a webhook is still accepted meanwhile.
        status, answer = await post(client, body)
        assert status == 200
    finally:
        for _, writer in conns:
            writer.close()
        for task in answers:
            task.cancel()
