"""router/serving.py: bodies read once, decoded and bounded; refusals as JSON; the header bound;
a malformed request as one debug line. A small app served with SERVER_SETTINGS and the
middleware, as create_app serves the router's (test_hostile.py throws worse at the real one)."""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from router import serving
from router.errors import BodyRefused
from router.serving import (
    BUSY_RETRY_AFTER,
    HEADER_BYTES,
    OTHER_BODY_BYTES,
    SERVER_SETTINGS,
    BodyBudget,
    body_refusal,
    bounded_bodies,
    json_dumps,
    read_body,
    refusal,
)

LIMIT = 1024
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    async def webhook(request: web.Request) -> web.Response:
        try:
            body = await read_body(request, LIMIT, "server.max_body_bytes")
        except BodyRefused as exc:
            return refusal(exc.status, exc.reason, str(exc))
        again = await read_body(request, LIMIT)  # read once: the same bytes
        return web.json_response(
            {"body": body.decode(), "same": again is body and await request.read() == body}
        )

    async def other(request: web.Request) -> web.Response:
        return web.json_response({"length": len(await request.read())})

    app = web.Application(
        middlewares=[bounded_bodies(lambda: 64 * 1024 * 1024)], client_max_size=64 * 1024 * 1024
    )
    app.router.add_post("/webhook", webhook)
    app.router.add_post("/other", other)
    app.router.add_get("/other", other)
    server = TestServer(app)
    await server.start_server(**SERVER_SETTINGS)  # TestServer(app, **kwargs) drops them
    return await aiohttp_client(server)


def test_refusal_is_the_routers_json_error() -> None:
    resp = refusal(422, "schema", "not a payload", {"problems": [{"path": "a", "error": "b"}]})
    assert resp.status == 422 and resp.content_type == "application/json"
    assert resp.text == (
        '{"status":"error","reason":"schema","error":"not a payload",'
        '"problems":[{"path":"a","error":"b"}]}'
    )
    assert orjson.loads(refusal(503, "store", "x").text or "") == {
        "status": "error",
        "reason": "store",
        "error": "x",
    }


def test_json_dumps_is_orjsons() -> None:
    assert json_dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'


TEXT = b'{"alerts": "' + b"x" * 900 + b'"}'


def raw_deflate(data: bytes) -> bytes:
    compress = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compress.compress(data) + compress.flush()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        (None, lambda b: b),
        ("identity", lambda b: b),
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        (" GZIP ", gzip.compress),
        ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 says
        ("deflate", raw_deflate),  # raw, as some clients send it
    ],
)
async def test_a_body_is_read_decoded(
    client: Client, coding: str | None, encode: Callable[[bytes], bytes]
) -> None:
    headers = {"Content-Encoding": coding} if coding else {}
    resp = await client.post("/webhook", data=encode(TEXT), headers=headers)
    assert resp.status == 200
    assert await resp.json() == {"body": TEXT.decode(), "same": True}


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
@pytest.mark.parametrize("encode", [lambda b: b, gzip.compress])
async def test_the_limit_counts_decoded_bytes(
    client: Client, size: int, encode: Callable[[bytes], bytes]
) -> None:
    headers = {} if encode(b"") == b"" else {"Content-Encoding": "gzip"}
    resp = await client.post("/webhook", data=encode(b"a" * size), headers=headers)
    if size == LIMIT:
        assert resp.status == 200
        return
    assert resp.status == 413
    assert await resp.json() == {
        "status": "error",
        "reason": "too_large",
        "error": "body larger than server.max_body_bytes (1024 bytes), counted decoded",
    }


async def test_a_gzip_bomb_is_refused_after_the_limit(client: Client) -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB from ~64 KB
    assert len(bomb) < 100_000
    resp = await client.post("/webhook", data=bomb, headers={"Content-Encoding": "gzip"})
    assert resp.status == 413 and (await resp.json())["reason"] == "too_large"


async def test_a_content_length_over_the_limit_is_refused_unread(client: Client) -> None:
    async def body() -> Any:
        yield b"a" * 10  # the rest never comes: the answer must not wait for it

    resp = await client.post("/webhook", data=b"a" * (LIMIT + 10))
    assert resp.status == 413
    resp = await client.post(
        "/webhook", data=body(), headers={"Content-Length": str(10 * LIMIT)}, timeout=5
    )
    assert resp.status == 413


@pytest.mark.parametrize(
    ("coding", "data", "status", "reason", "error"),
    [
        (
            "br",
            b"x",
            415,
            "content_encoding",
            "Content-Encoding 'br' is not supported (gzip, deflate or none)",
        ),
        (
            "gzip, gzip",
            b"x",
            415,
            "content_encoding",
            "Content-Encoding 'gzip, gzip' is not supported (gzip, deflate or none)",
        ),
        (
            "gzip",
            gzip.compress(TEXT)[:-12],
            400,
            "content_encoding",
            "cannot decode the body: the compressed body ends early",
        ),
        (
            "gzip",
            gzip.compress(TEXT) + b"more",
            400,
            "content_encoding",
            "cannot decode the body: data after the end of the compressed body",
        ),
        (
            "gzip",
            b"not gzip at all",
            400,
            "content_encoding",
            "cannot decode the body: Error -3 while decompressing data: incorrect header check",
        ),
    ],
)
async def test_an_encoding_that_cannot_be_read_is_a_clear_4xx(
    client: Client, coding: str, data: bytes, status: int, reason: str, error: str
) -> None:
    resp = await client.post("/webhook", data=data, headers={"Content-Encoding": coding})
    assert resp.status == status
    assert await resp.json() == {"status": "error", "reason": reason, "error": error}


async def test_other_paths_are_read_by_the_middleware_up_to_1_mib(client: Client) -> None:
    resp = await client.post("/other", data=b"a" * OTHER_BODY_BYTES)
    assert resp.status == 200 and await resp.json() == {"length": OTHER_BODY_BYTES}
    resp = await client.post(
        "/other",
        data=gzip.compress(b"a" * (OTHER_BODY_BYTES + 1)),
        headers={"Content-Encoding": "gzip"},
    )
    assert resp.status == 413
    assert await resp.json() == {
        "status": "error",
        "reason": "too_large",
        "error": f"body larger than {OTHER_BODY_BYTES} bytes, counted decoded",
    }
    resp = await client.post("/other", data=b"x", headers={"Content-Encoding": "br"})
    assert resp.status == 415 and (await resp.json())["reason"] == "content_encoding"


async def test_the_webhook_reads_its_own_body_after_the_middleware(client: Client) -> None:
    # /webhook is not read by the middleware: its own limit applies (1 KiB here, not 1 MiB).
    resp = await client.post("/webhook", data=b"a" * 2 * LIMIT)
    assert resp.status == 413 and "server.max_body_bytes" in (await resp.json())["error"]


async def test_request_heads_over_the_bound_are_431(client: Client) -> None:
    headers = {f"X-Padding-{n}": "p" * 7000 for n in range(5)}  # 35 KB, each line under 8 KB
    resp = await client.get("/other", headers=headers)
    assert resp.status == 431
    assert await resp.json() == {
        "status": "error",
        "reason": "headers_too_large",
        "error": f"request headers larger than {HEADER_BYTES} bytes",
    }
    headers = {f"X-Padding-{n}": "p" * 7000 for n in range(4)}  # 28 KB: passes
    assert (await client.get("/other", headers=headers)).status == 200


def test_a_body_budget_refuses_past_its_limit_until_bytes_are_given_back() -> None:
    budget = BodyBudget(lambda: 100, "server.max_body_bytes_in_flight")
    first, second = (make_mocked_request("POST", "/webhook") for _ in range(2))
    budget.take(first, 60)
    budget.take(first, 20)
    with pytest.raises(BodyRefused) as refused:
        budget.take(second, 21)
    assert (refused.value.status, refused.value.reason) == (503, "busy")
    assert str(refused.value) == (
        "request bodies being read hold 80 bytes (server.max_body_bytes_in_flight 100); retry later"
    )
    answer = body_refusal(refused.value)
    assert answer.status == 503
    assert answer.headers["Retry-After"] == str(round(BUSY_RETRY_AFTER.total_seconds()))
    budget.take(second, 20)  # up to the limit exactly
    budget.release(first)
    budget.release(first)  # once: nothing more is given back
    assert budget.held == 20
    budget.take(second, 80)


def malformed_record() -> logging.LogRecord:
    """The record aiohttp logs for a request its parser refused."""
    try:
        raise BadHttpMessage("Invalid method encountered:\n\n  b'\\x16\\x03'\n    ^")
    except BadHttpMessage:
        import sys

        return serving.log.makeRecord(
            serving.log.name,
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            ("203.0.113.7",),
            sys.exc_info(),
        )


@pytest.fixture
def http_level() -> Any:
    level = serving.log.level
    yield lambda lvl: serving.log.setLevel(lvl)
    serving.log.setLevel(level)


def test_a_malformed_request_is_one_debug_line(http_level: Any) -> None:
    http_level(logging.DEBUG)
    record = malformed_record()
    assert all(f.filter(record) for f in serving.log.filters)
    assert (record.levelname, record.getMessage(), record.exc_info) == (
        "DEBUG",
        "http_request_malformed",
        None,
    )
    assert record.fields == {  # type: ignore[attr-defined]
        "peer": "203.0.113.7",
        "status": 400,
        "error": "Invalid method encountered: b'\\x16\\x03' ^",
    }


def test_a_malformed_request_is_not_logged_above_debug(http_level: Any) -> None:
    http_level(logging.INFO)
    assert not all(f.filter(malformed_record()) for f in serving.log.filters)


def test_other_errors_pass_unchanged(http_level: Any) -> None:
    http_level(logging.INFO)
    record = serving.log.makeRecord(
        serving.log.name, logging.ERROR, __file__, 1, "boom", (), (None, None, None)
    )
    assert all(f.filter(record) for f in serving.log.filters)
    assert record.levelname == "ERROR" and record.getMessage() == "boom"


async def _raw(port: int, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    return reader, writer


async def _post_whole(port: int, body: bytes) -> int:
    """The status of one POST /webhook of `body` on a new connection."""
    reader, writer = await _raw(
        port, b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    try:
        async with asyncio.timeout(10):
            return int((await reader.readline()).split()[1])
    finally:
        writer.close()


@pytest.fixture
async def tight(aiohttp_client: Callable[..., Awaitable[Client]]) -> int:
    """The port of an app whose webhook budget is one body of LIMIT bytes (the smallest
    server.max_body_bytes_in_flight the config allows: max_body_bytes)."""

    async def webhook(request: web.Request) -> web.Response:
        try:
            body = await read_body(request, LIMIT, "server.max_body_bytes")
        except BodyRefused as exc:  # as router/intake.py answers it
            return body_refusal(exc)
        if body.startswith(b"boom"):
            raise RuntimeError("a handler that fails after reading")
        return web.json_response({"length": len(body)})

    app = web.Application(middlewares=[bounded_bodies(lambda: LIMIT)])
    app.router.add_post("/webhook", webhook)
    server = TestServer(app)
    await server.start_server(**SERVER_SETTINGS)
    port = (await aiohttp_client(server)).port
    assert port is not None
    return port


async def test_a_body_over_the_limit_is_413_even_when_it_passes_the_budget(tight: int) -> None:
    # It was 503 busy with Retry-After (Alertmanager retries it, to be refused again): read
    # without Content-Length (chunked, or decoded from gzip), its last read passed the budget
    # before the limit was checked.
    head = b"POST /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    chunked = b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        LIMIT + 1,
        b"a" * (LIMIT + 1),
    )
    bomb = gzip.compress(b"a" * 100 * LIMIT)
    gzipped = b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb
    for body in (chunked, gzipped):
        reader, writer = await _raw(tight, head + body)
        async with asyncio.timeout(10):
            assert (await reader.readline()).split()[1] == b"413"
        writer.close()


async def test_no_request_keeps_budget_it_took_whatever_becomes_of_it(tight: int) -> None:
    # The webhook budget is one body of LIMIT bytes: one byte kept by any request gone wrong
    # (client gone mid-body, chunked or compressed bodies cut, refused, Expect: 100-continue)
    # would refuse a full body with 503 forever, as Alertmanager would be.
    port = tight
    full = b"a" * LIMIT
    head = b"POST /webhook HTTP/1.1\r\nHost: x\r\n"
    gz = gzip.compress(full)
    faults = {
        "mid-body, gone": head + b"Content-Length: %d\r\n\r\n" % LIMIT + full[:700],
        "chunked, gone": head + b"Transfer-Encoding: chunked\r\n\r\n2bc\r\n" + full[:700],
        "gzip cut, gone": head
        + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gz)
        + gz[: len(gz) // 2],
        "100-continue, gone": head
        + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % LIMIT
        + full[:700],
        "gzip corrupt": head
        + b"Content-Encoding: gzip\r\nContent-Length: 20\r\n\r\n"
        + gz[:10]
        + b"\xff" * 10,
        "too large, chunked": head
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (LIMIT + 1, b"a" * (LIMIT + 1)),
        "handler fails": head + b"Content-Length: %d\r\n\r\nboom" % LIMIT + full[4:],
    }
    answers = {"gzip corrupt": b"400", "too large, chunked": b"413", "handler fails": b"500"}
    for fault, request in faults.items():
        reader, writer = await _raw(port, request)
        if fault in answers:
            async with asyncio.timeout(10):
                assert (await reader.readline()).split()[1] == answers[fault]
            writer.close()
        else:
            writer.transport.abort()  # a reset, mid-body
        async with asyncio.timeout(5):  # until the server has seen it go (503 busy meanwhile)
            while (status := await _post_whole(port, full)) == 503:
                await asyncio.sleep(0.01)
        assert status == 200, fault
