"""5,000 mixed requests against the real `alert-router serve` process: every endpoint,
compressed and chunked bodies, gzip bombs, odd and non-UTF-8 headers, malformed requests.
Every answer is one its endpoint may give (never a 500), the process's memory stays bounded, nothing is logged as a traceback, and refusals name the peer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import orjson
import pytest

from .harness import Fakes, firing_payload
from .helpers import fixture_body, free_port, slack_signed, wait_http

TOKEN = "fuzz-token-0123"
SIGNING = "fuzz-signing-secret"
MAX_BODY = 256 * 1024
REQUESTS = 5_000
CONCURRENCY = 24
# Above the idle process: 24 requests in flight, each bounded by its path's limit (1 MiB at
# most), and the router's state. Before bodies were bounded, one 200 MiB gzip bomb took 2 GiB.
RSS_GROWTH_MIB = 400

CONFIG = """
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: {token}}}, max_body_bytes: {max_body}}}
storage: {{path: "{db}"}}
receivers: [{{name: r}}]
route: {{receiver: r}}
chatops:
  slack: {{signing_secret: {signing}, team_id: T1, allowed_channels: [C1]}}
  telegram: {{bot_token: "123456:good-token", api_url: "{telegram}", webhook_secret: {signing},
             allowed_chats: [1001]}}
"""
AUTH = f"Bearer {TOKEN}".encode()
TG = "/telegram/webhook"
GOOD = fixture_body("firing-group-3-alerts")


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and every process under it, MiB (0 for a process gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
        todo += map(int, children)
    return total / 1024


def request(
    method: str, path: str, body: bytes = b"", headers: dict[str, bytes] | None = None
) -> bytes:
    """An HTTP/1.1 request as bytes: any header value (bytes, not necessarily UTF-8)."""
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: fuzz", b"Connection: close"]
    headers = dict(headers or {})
    if "Transfer-Encoding" not in headers and (body or method == "POST"):
        headers.setdefault("Content-Length", str(len(body)).encode())
    head += [k.encode() + b": " + v for k, v in headers.items()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@functools.cache
def _bomb(mib: int, coding: bytes) -> bytes:
    raw = b"{" * (mib * 1024 * 1024)
    return gzip.compress(raw, 9) if coding == b"gzip" else zlib.compress(raw, 9)


def bomb(rng: random.Random) -> tuple[bytes, bytes]:
    """(Content-Encoding, body): a few KB that inflate to 8-64 MiB."""
    coding = rng.choice([b"gzip", b"deflate"])
    return coding, _bomb(rng.choice([8, 16, 64]), coding)


def invalid_utf8(rng: random.Random) -> bytes:
    return GOOD.replace(b"checkout-0", b"check\xff\xfe" + rng.randbytes(3), 1)


Case = tuple[str, bytes, frozenset[int]]  # (kind, request bytes, statuses allowed)


def cases(seed: int) -> Iterator[Case]:
    """REQUESTS requests, drawn from every kind below."""
    rng = random.Random(seed)
    json_ct = {"Content-Type": b"application/json", "Authorization": AUTH}

    def webhook() -> Case:
        n = rng.random()
        if n < 0.25:
            body = firing_payload(rng.randint(1, 40), f"g{rng.randint(0, 50)}")
            return "webhook ok", request("POST", "/webhook", body, json_ct), frozenset({200})
        if n < 0.35:
            te = {**json_ct, "Transfer-Encoding": b"chunked"}
            body = chunked(GOOD, rng.randint(1, 500))
            return "webhook chunked", request("POST", "/webhook", body, te), frozenset({200})
        if n < 0.45:
            gz = {**json_ct, "Content-Encoding": b"gzip"}
            body = gzip.compress(GOOD)
            if rng.random() < 0.5:
                gz["Transfer-Encoding"] = b"chunked"
                body = chunked(body, 97)
            return "webhook gzip", request("POST", "/webhook", body, gz), frozenset({200})
        if n < 0.55:
            coding, body = bomb(rng)
            headers = {**json_ct, "Content-Encoding": coding}
            return "webhook bomb", request("POST", "/webhook", body, headers), frozenset({413})
        if n < 0.65:
            auth = rng.choice(
                [b"Bearer \xff\xfe", b"Basic \xc3\xa9", b"Basic " + base64.b64encode(b"\xff:x"),
                 b"Bearer " + TOKEN.encode() + b"x", b"", b"Bearer"]
            )  # fmt: skip
            headers = {"Content-Type": b"application/json", "Authorization": auth}
            return "webhook bad auth", request("POST", "/webhook", GOOD, headers), frozenset({401})
        if n < 0.75:
            bad = rng.choice(
                [invalid_utf8(rng), rng.randbytes(rng.randint(0, 3000)),
                 GOOD.replace(b'"externalURL"', b'"x": NaN, "externalURL"'),
                 GOOD.replace(b'"version":"4"', b'"version":"4","truncatedAlerts":1e400'),
                 b"[" * 50_000, b'{"version": "4"}']
            )  # fmt: skip
            statuses = frozenset({400, 413, 422})
            return "webhook bad body", request("POST", "/webhook", bad, json_ct), statuses
        if n < 0.8:
            headers = {**json_ct, "Content-Type": rng.choice([b"text/plain", b"\xff/\xfe", b""])}
            return "webhook type", request("POST", "/webhook", GOOD, headers), frozenset({415})
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH"])
        return "webhook method", request(method, "/webhook"), frozenset({405})

    def api() -> Case:
        path = rng.choice(
            ["/api/v1/alerts", "/api/v1/incidents", "/api/v1/payloads/0123456789abcdef",
             "/api/v1/payloads/%ff%fe", "/api/v1/alerts?x=%ff"]
        )  # fmt: skip
        if rng.random() < 0.5:
            return "api anonymous", request("GET", path), frozenset({401})
        return "api", request("GET", path, headers={"Authorization": AUTH}), frozenset({200, 404})

    def public() -> Case:
        path = rng.choice(["/healthz", "/readyz", "/metrics"])
        if rng.random() < 0.2:  # a body where none is expected, maybe a bomb
            coding, body = bomb(rng)
            headers = {"Content-Encoding": coding}
            return "public bomb", request("POST", path, body, headers), frozenset({405, 413})
        return "public", request("GET", path), frozenset({200})

    def slack() -> Case:
        path = rng.choice(["/slack/commands", "/slack/interactions"])
        n = rng.random()
        if n < 0.3:
            coding, body = bomb(rng)
            return (
                "slack bomb",
                request("POST", path, body, {"Content-Encoding": coding}),
                frozenset({413}),
            )
        if n < 0.6:
            raw = urlencode(
                {
                    "command": "/ack",
                    "text": "help",
                    "team_id": "T1",
                    "channel_id": "C1",
                    "user_id": "U1",
                    "trigger_id": str(rng.random()),  # a replayed request is refused
                }
            )
            signed = {k: v.encode() for k, v in slack_signed(raw.encode(), SIGNING).items()}
            return (
                "slack signed",
                request("POST", path, raw.encode(), signed),
                frozenset({200, 400}),
            )
        body = rng.choice([rng.randbytes(rng.randint(0, 2000)), invalid_utf8(rng)])
        headers = {"X-Slack-Signature": rng.choice([b"v0=00", b"\xff"]),
                   "X-Slack-Request-Timestamp": rng.choice([b"1", b"nope", b"\xfe"])}  # fmt: skip
        return "slack unsigned", request("POST", path, body, headers), frozenset({401})

    def telegram() -> Case:
        secret = {"X-Telegram-Bot-Api-Secret-Token": SIGNING.encode()}
        n = rng.random()
        if n < 0.2:
            coding, body = bomb(rng)
            headers = {**secret, "Content-Encoding": coding}
            return "telegram bomb", request("POST", TG, body, headers), frozenset({413})
        if n < 0.5:
            update = {"update_id": rng.randrange(1 << 30), "message": {
                "message_id": 1, "date": 1, "chat": {"id": 1001, "type": "group"},
                "from": {"id": 7, "is_bot": False, "first_name": "x\udcff" if n < 0.3 else "o"},
                "text": "/help"}}  # fmt: skip
            body = json.dumps(update).encode()
            return "telegram update", request("POST", TG, body, secret), frozenset({200, 400})
        if n < 0.7:
            body = rng.choice([rng.randbytes(300), invalid_utf8(rng), b"[]", b"{}"])
            return "telegram junk", request("POST", TG, body, secret), frozenset({400})
        wrong = {"X-Telegram-Bot-Api-Secret-Token": rng.choice([b"\xff\xfe", b"", b"x" * 300])}
        return "telegram bad secret", request("POST", TG, GOOD, wrong), frozenset({401})

    def reload() -> Case:
        if rng.random() < 0.1:
            headers = {"Authorization": AUTH}
            return "reload", request("POST", "/-/reload", b"", headers), frozenset({200})
        return (
            "reload anonymous",
            request("POST", "/-/reload", rng.randbytes(100)),
            frozenset({401}),
        )

    def odd() -> Case:
        n = rng.random()
        if n < 0.3:
            path = rng.choice(["/", "/nope", "/webhook/x", "/%ff", "/" + "a" * 3000])
            return "unknown path", request(rng.choice(["GET", "POST"]), path), frozenset({404, 405})
        if n < 0.6:
            raw = rng.choice(
                [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", rng.randbytes(200) + b"\r\n\r\n",
                 b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                 b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                 b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]
            )  # fmt: skip
            return "malformed", raw, frozenset({400, 404, 405, 505, 0})
        headers = {
            "X-Big": b"x" * rng.choice([100, 9000, 70_000]),
            "X-Odd": b"\xff\x00"[: rng.randint(1, 2)],
        }
        return (
            "odd headers",
            request("GET", "/healthz", headers=headers),
            frozenset({200, 400, 431, 0}),
        )

    kinds = [webhook] * 5 + [api] * 2 + [public, slack, slack, telegram, reload, odd]
    for _ in range(REQUESTS):
        yield rng.choice(kinds)()


async def exchange(port: int, raw: bytes) -> int:
    """Send `raw`, read the answer to its end; its status (0 if the server just closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        with contextlib.suppress(ConnectionError):  # answered (413), closed before the rest
            await writer.drain()
        answer = await reader.read()
    except ConnectionError:
        return 0
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


@pytest.fixture
def server(tmp_path: Path, fakes: Fakes) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`alert-router serve` (not --dry-run, so that Telegram chat-ops run, against the fake; no
    receiver has a channel), its port and its log file."""
    port = free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(
        CONFIG.format(
            port=port,
            token=TOKEN,
            max_body=MAX_BODY,
            db=tmp_path / "s.db",
            signing=SIGNING,
            telegram=fakes.urls["telegram"],
        )
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(config),
             "--log-format", "json", "--log-level", "debug"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
async def test_5000_mixed_requests(server: tuple[subprocess.Popen[bytes], int, Path]) -> None:
    proc, port, log = server
    await wait_http(f"http://127.0.0.1:{port}/readyz", proc, timeout_s=30)
    empty = request("POST", TG, b"{}", {"X-Telegram-Bot-Api-Secret-Token": SIGNING.encode()})
    for _ in range(300):  # Telegram chat-ops connect to the fake in the background (30 s)
        if await exchange(port, empty) != 503:
            break
        await asyncio.sleep(0.1)
    baseline = rss_mib(proc.pid)
    peak = baseline
    queue = list(cases(seed=15))
    wrong: list[tuple[str, int, bytes]] = []
    seen: Counter[tuple[str, int]] = Counter()

    async def worker() -> None:
        while queue:
            kind, raw, allowed = queue.pop()
            status = await asyncio.wait_for(exchange(port, raw), 60)
            seen[kind, status] += 1
            if status not in allowed:
                wrong.append((kind, status, raw[:200]))

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mib(proc.pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    finally:
        sampler.cancel()
    assert not wrong, (wrong[:10], sorted(seen.items()))
    assert sum(seen.values()) == REQUESTS
    assert seen["telegram update", 200] and seen["slack signed", 200]  # chat-ops were live
    assert peak - baseline < RSS_GROWTH_MIB, (baseline, peak)
    assert proc.poll() is None

    lines = [orjson.loads(line) for line in log.read_bytes().splitlines() if line[:1] == b"{"]
    assert not [e for e in lines if "exception" in e or e["level"] == "error"][:5]
    malformed = [e for e in lines if e["event"] == "http_request_malformed"]
    assert malformed and all(e["level"] == "debug" for e in malformed)
    slack_refused = [e for e in lines if e["event"] == "slack_request_rejected"]
    assert slack_refused and all(e["peer"] == "127.0.0.1" for e in slack_refused)
