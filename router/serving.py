"""HTTP serving: request bodies read once, decoded and bounded; header bounds; timeouts.

alert-router's server runs with SERVER_SETTINGS and the `bounded_bodies` middleware, so that
no client, signed in or not, makes a request cost more memory than its path's body limit:

- A body is counted as decoded: `Content-Encoding: gzip` or `deflate` is inflated here, in
  steps that never produce more than the limit (a 200 KB gzip bomb that inflates to 200 MiB is
  refused after `limit` bytes of output). aiohttp's own decompression is off
  (`auto_decompress=False`): a refused request's unread rest is then discarded as it came, not
  inflated. Other codings are refused (415). gzip is RFC 1952, deflate the zlib format of
  RFC 1950 (RFC 9110 8.4.1), which some clients send raw (RFC 1951): both are read.
- POST /webhook reads its body after its auth check (the Authorization header), with the limit
  `server.max_body_bytes`; every other path (chat-ops, /-/reload, the read API, unknown paths)
  reads at most OTHER_BODY_BYTES, before any handler or auth runs.
- A connection must complete a request's headers within KEEPALIVE of opening or of its
  previous answer (aiohttp's keep-alive timer also runs before the first request), and a body
  must arrive within BODY_TIMEOUT.
- A request's headers are at most HEADER_BYTES in all (aiohttp bounds each line to 8 KB and
  their count to MAX_HEADERS); a larger head is refused (431, RFC 6585 5) before its body is
  awaited, so that connections waiting for a body hold no more than that each.
- A malformed request (aiohttp's parser refuses it with 400), and a client that goes away
  while its body is read, are logged as one debug line, not as an error with a traceback:
  anyone can do either.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from router.errors import BodyRefused
from router.logs import event

log = logging.getLogger("router.http")

OTHER_BODY_BYTES = 1024 * 1024  # chat-ops updates, Slack forms: a few KB; nothing else has one
# Every path but POST /webhook, together: read before any credential is checked, so that
# unauthenticated clients cannot take the webhook's budget (server.max_body_bytes_in_flight).
OTHER_BODIES_BYTES = 32 * OTHER_BODY_BYTES
BUSY_RETRY_AFTER = timedelta(seconds=5)
BODY_TIMEOUT = timedelta(seconds=10)
# Go's HTTP client (Alertmanager) retries a request on a kept-alive connection the server has
# just closed, so a short idle timeout costs it nothing.
KEEPALIVE = timedelta(seconds=15)
LINGER = timedelta(seconds=2)  # after refusing a body, read (and discard) its rest this long
# Alertmanager sends ~6 headers, Slack ~12; proxies in front add a few dozen bytes each.
MAX_HEADERS = 64
HEADER_BYTES = 32 * 1024


class _QuietMalformed(logging.Filter):
    """aiohttp logs a request its parser refused as an error with a traceback; make it one
    debug line (`http_request_malformed`), shown only at --log-level debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            name = "http_request_malformed"
            fields: dict[str, Any] = {"status": exc.code, "error": " ".join(exc.message.split())}
        elif isinstance(exc, ConnectionResetError):  # "Error handling request": client gone
            name, fields = "http_client_gone", {"error": str(exc)}
        else:
            return True
        if not log.isEnabledFor(logging.DEBUG):
            return False
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.msg, record.args = name, ()
        record.exc_info, record.exc_text = None, None
        record.fields = {"peer": peer, **fields}
        return True


log.addFilter(_QuietMalformed())

# Passed to every web.AppRunner / web.run_app that serves alert-router's apps (seconds there).
SERVER_SETTINGS: dict[str, Any] = {
    "keepalive_timeout": KEEPALIVE.total_seconds(),
    "lingering_time": LINGER.total_seconds(),
    "auto_decompress": False,
    "max_headers": MAX_HEADERS,
    "logger": log,
}


BODY = web.RequestKey("body", bytes)  # the decoded body, once read


class BodyBudget:
    """Bytes of request bodies held at once by the requests of a group of paths, counted
    decoded as they are read; released when the request's handler has returned.

    `limit()` is read at each take, so a reload changes it. The bytes a parsed webhook payload
    takes while its commit runs are not counted (bounded by `server.max_backlog` payloads).
    """

    def __init__(self, limit: Callable[[], int], setting: str) -> None:
        """`setting` names the bound in the 503's message (e.g. "server.max_body_bytes_in_flight")."""
        self.limit = limit
        self.setting = setting
        self.held = 0

    def take(self, request: web.Request, n: int) -> None:
        """Count `n` more bytes for `request`; raises BodyRefused (503 "busy", with
        Retry-After) if the bodies held would then pass the limit."""
        limit = self.limit()
        if self.held + n > limit:
            raise BodyRefused(
                503,
                "busy",
                f"request bodies being read hold {self.held} bytes ({self.setting} {limit});"
                " retry later",
                retry_after=BUSY_RETRY_AFTER,
            )
        self.held += n
        request[_HELD] = request.get(_HELD, 0) + n

    def release(self, request: web.Request) -> None:
        """Give back what `request` took (once)."""
        self.held -= request.pop(_HELD, 0)


_HELD = web.RequestKey("body_bytes_held", int)
BUDGET = web.RequestKey("body_budget", BodyBudget)  # set by bounded_bodies for read_body


def json_dumps(data: object) -> str:
    """JSON text for web.json_response(dumps=...): orjson, as the store writes and reads it."""
    return orjson.dumps(data).decode()


def refusal(
    status: int, reason: str, message: str, extra: dict[str, Any] | None = None
) -> web.Response:
    """The JSON answer of alert-router's refusals: `{"status": "error", "reason", "error"}`.

    `status` is the HTTP status; `extra` adds keys (e.g. `problems`) to the body.
    """
    body = {"status": "error", "reason": reason, "error": message, **(extra or {})}
    return web.json_response(body, status=status, dumps=json_dumps)


def body_refusal(exc: BodyRefused) -> web.Response:
    """The JSON answer to a refused body, with `Retry-After` (seconds) when it says when."""
    resp = refusal(exc.status, exc.reason, str(exc))
    if exc.retry_after is not None:
        resp.headers[hdrs.RETRY_AFTER] = str(max(1, round(exc.retry_after.total_seconds())))
    return resp


def _decoder(request: web.Request) -> Callable[[bytes, int], bytes] | None:
    """How to decode the body's Content-Encoding in steps of at most n bytes of output, or None
    if it is not encoded (or aiohttp decodes it already); raises BodyRefused (415)."""
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if coding in ("", "identity") or request.content.total_compressed_bytes is not None:
        return None
    if coding in ("gzip", "x-gzip"):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif coding == "deflate":  # zlib-wrapped (RFC 9110 8.4.1.2); some clients send it raw
        inflate = None
    else:
        raise BodyRefused(
            415,
            "content_encoding",
            f"Content-Encoding {coding[:40]!r} is not supported (gzip, deflate or none)",
        )

    def decode(chunk: bytes, room: int) -> bytes:
        nonlocal inflate
        if inflate is None:
            raw = bool(chunk) and chunk[0] & 0x0F != 8
            inflate = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        if not chunk:  # the end of the body
            if not inflate.eof:
                raise zlib.error("the compressed body ends early")
            return b""
        if inflate.eof:
            raise zlib.error("data after the end of the compressed body")
        # Output stops at `room`; input is left over only then, and the caller refuses.
        out = inflate.decompress(chunk, room)
        if inflate.unused_data:  # past the end, in the chunk that ended it
            raise zlib.error("data after the end of the compressed body")
        return out

    return decode


async def read_body(request: web.Request, limit: int, limit_name: str = "") -> bytes:
    """The request's body, decoded, of at most `limit` bytes, read within BODY_TIMEOUT.

    Read once: later calls (and `await request.read()` in any handler) return the same bytes.
    `limit_name` names the setting in the 413's message (e.g. "server.max_body_bytes").
    What is read is counted in the path's BodyBudget (set by `bounded_bodies`), if any.
    Raises BodyRefused: 413 too large (counted after decoding), 415 unsupported coding,
    400 undecodable, 408 too slow, 503 the budget is spent. Memory used: at most `limit` +
    one network read.
    """
    if BODY in request:
        return request[BODY]
    length = request.content_length
    what = f"{limit_name} ({limit} bytes)" if limit_name else f"{limit} bytes"
    too_large = BodyRefused(413, "too_large", f"body larger than {what}, counted decoded")
    if length is not None and length > limit:
        raise too_large
    decode = _decoder(request)
    budget = request.get(BUDGET)
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT.total_seconds()):
            while True:
                chunk = await request.content.readany()
                room = limit + 1 - len(body)
                data = decode(chunk, room) if decode is not None else chunk
                if len(body) + len(data) > limit:  # refused for good: before the budget's 503
                    raise too_large
                if budget is not None:
                    budget.take(request, len(data))
                body += data
                if not chunk:
                    break
    except TimeoutError:
        raise BodyRefused(
            408, "timeout", f"the body did not arrive within {BODY_TIMEOUT.total_seconds():.0f}s"
        ) from None
    except zlib.error as exc:
        raise BodyRefused(400, "content_encoding", f"cannot decode the body: {exc}") from None
    data = request[BODY] = bytes(body)
    request._read_bytes = data  # aiohttp's cache: request.read()/text()/post() return it
    return data


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]  # what a middleware wraps


def bounded_bodies(
    in_flight: Callable[[], int], own_readers: frozenset[str] = frozenset({"/webhook"})
) -> Any:
    """Middleware: read every body (but those of `own_readers` paths, which call read_body
    themselves after their auth) with the limit OTHER_BODY_BYTES before the handler runs.
    A refused body is answered here (JSON error) and logged at debug with the peer.

    Bodies held at once are bounded: those of `own_readers` paths by `in_flight()` bytes
    (server.max_body_bytes_in_flight), the others' by OTHER_BODIES_BYTES; past it a request
    is answered 503 with Retry-After (Alertmanager retries it)."""
    webhooks = BodyBudget(in_flight, "server.max_body_bytes_in_flight")
    others = BodyBudget(lambda: OTHER_BODIES_BYTES, "all paths but /webhook")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        head = sum(len(k) + len(v) + 4 for k, v in request.raw_headers)
        if head > HEADER_BYTES:
            event(log, logging.DEBUG, "http_headers_refused", bytes=head, peer=request.remote)
            message = f"request headers larger than {HEADER_BYTES} bytes"
            return refusal(431, "headers_too_large", message)
        own = request.path in own_readers
        budget = request[BUDGET] = webhooks if own else others
        try:
            if request.body_exists and not own:
                try:
                    await read_body(request, OTHER_BODY_BYTES)
                except BodyRefused as exc:
                    event(
                        log,
                        logging.DEBUG,  # anyone can send one: not worth a line at info
                        "http_body_refused",
                        path=request.path[:200],
                        reason=exc.reason,
                        peer=request.remote,
                    )
                    return body_refusal(exc)
            return await handler(request)
        finally:
            budget.release(request)

    return middleware
