"""A fake Slack Web API (/api/chat.postMessage, /api/chat.update) and incoming webhook.

Checks what Slack checks for these calls: the bearer token (`invalid_auth`, `not_authed`), the
channel (`channel_not_found`; `#name` resolves to an id), that there is text, blocks or
attachments (`no_text`), Block Kit limits (50 blocks, 3000 characters per section text, 1-25
elements per actions block, a button's url absolute http(s) and at most 3000 characters:
`invalid_blocks`; api.slack.com/reference/block-kit), 40,000 characters of text
(`msg_too_long`), the message to update (`message_not_found`). `mentions()` lists what Slack
would notify people for, `half_links()` the `<` that open no complete `<…>`. Rate limiting answers HTTP 429
with `{"ok": false, "error": "ratelimited"}` and a Retry-After header, as Slack does.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

CHANNELS = {"#alerts": "C0ALERTS", "#security": "C0SECURITY", "#db-alerts": "C0DB"}


@dataclass
class Posted:
    channel: str
    ts: str
    payload: dict[str, Any]
    thread_ts: str | None
    updates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeSlack:
    tokens: set[str] = field(default_factory=lambda: {"xoxb-good"})
    messages: dict[tuple[str, str], Posted] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    webhook_posts: list[dict[str, Any]] = field(default_factory=list)
    webhook_attempts: list[float] = field(default_factory=list)  # time.monotonic() of each post
    responses: list[dict[str, Any]] = field(default_factory=list)  # posted to a response_url
    fail_next: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0
    _ts: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self.handle)
        app.router.add_post("/services/{path:.*}", self.webhook)
        app.router.add_post("/actions/{path:.*}", self.response_url)
        return app

    def ratelimit(self, retry_after: int, times: int = 1) -> None:
        for _ in range(times):
            self.fail_next.append((429, "ratelimited", {"Retry-After": str(retry_after)}))

    def posts(self) -> list[Posted]:
        return [m for m in self.messages.values() if m.thread_ts is None]

    def replies(self) -> list[Posted]:
        return [m for m in self.messages.values() if m.thread_ts is not None]

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await _body(request)
        self.calls.append((method, body, time.monotonic()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return _error("not_authed")
        if auth.removeprefix("Bearer ") not in self.tokens:
            return _error("invalid_auth")
        if self.fail_next:
            status, error, headers = self.fail_next.pop(0)
            return _error(error, status, headers)
        if method == "chat.postMessage":
            return self.post_message(body)
        if method == "chat.update":
            return self.update(body)
        return _error("unknown_method", 404)

    def _channel(self, name: str) -> str | None:
        if name in CHANNELS.values():
            return name
        return CHANNELS.get(name if name.startswith("#") else f"#{name}")

    def post_message(self, body: dict[str, Any]) -> web.Response:
        channel = self._channel(str(body.get("channel", "")))
        if channel is None:
            return _error("channel_not_found")
        problem = content_problem(body)
        if problem:
            return _error(problem)
        self._ts += 1
        ts = f"1763884800.{self._ts:06d}"
        thread = body.get("thread_ts")
        if thread is not None and (channel, thread) not in self.messages:
            return _error("thread_not_found")
        self.messages[(channel, ts)] = Posted(channel, ts, body, thread)
        return web.json_response(
            {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "message": {"type": "message", "text": body.get("text", ""), "ts": ts},
            }
        )

    def update(self, body: dict[str, Any]) -> web.Response:
        channel = self._channel(str(body.get("channel", "")))
        if channel is None:
            return _error("channel_not_found")
        posted = self.messages.get((channel, str(body.get("ts"))))
        if posted is None:
            return _error("message_not_found")
        problem = content_problem(body)
        if problem:
            return _error(problem)
        posted.updates.append(body)
        return web.json_response(
            {"ok": True, "channel": channel, "ts": posted.ts, "text": body.get("text", "")}
        )

    async def webhook(self, request: web.Request) -> web.Response:
        self.webhook_attempts.append(time.monotonic())
        if request.match_info["path"] != "T000/B000/good":
            return web.Response(status=404, text="no_service")
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if self.fail_next:
            status, error, headers = self.fail_next.pop(0)
            return web.Response(status=status, text=error, headers=headers)
        problem = content_problem(body)
        if problem:
            return web.Response(status=400, text=problem)
        self.webhook_posts.append(body)
        return web.Response(text="ok")

    async def response_url(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        return web.json_response({"ok": True})


def content_problem(body: dict[str, Any]) -> str:
    if not (body.get("text") or body.get("blocks") or body.get("attachments")):
        return "no_text"
    block_lists = [body.get("blocks") or []] + [
        a.get("blocks") or [] for a in body.get("attachments") or []
    ]
    for blocks in block_lists:
        if len(blocks) > 50:
            return "invalid_blocks"
        for block in blocks:
            text = (block.get("text") or {}).get("text", "")
            if block.get("type") == "section" and not 1 <= len(text) <= 3000:
                return "invalid_blocks"
            if block.get("type") == "actions" and not 1 <= len(block.get("elements", [])) <= 25:
                return "invalid_blocks"
            for element in block.get("elements") or []:
                if "url" in element and not _button_url(str(element["url"])):
                    return "invalid_blocks"
    if len(str(body.get("text", ""))) > 40000:
        return "msg_too_long"
    return ""


def _button_url(url: str) -> bool:
    parts = urlsplit(url)
    return (
        len(url) <= 3000
        and parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not any(ch.isspace() for ch in url)
    )


def texts(body: dict[str, Any]) -> list[str]:
    """Every mrkdwn text of a message: its text and each section's."""
    blocks = [*(body.get("blocks") or [])]
    for attachment in body.get("attachments") or []:
        blocks += attachment.get("blocks") or []
    return [str(body.get("text", ""))] + [
        str((b.get("text") or {}).get("text", "")) for b in blocks if b.get("type") == "section"
    ]


def mentions(text: str) -> list[str]:
    """The special mentions and user/group mentions Slack notifies for (<!here>, <@U123>...)."""
    return re.findall(r"<(?:!(?:here|channel|everyone|subteam\^)[^>]*|@[UW][^>]*)>", text)


def half_links(text: str) -> list[str]:
    """A `<` that opens no complete `<…>`: Slack shows what follows it mangled or not at all."""
    return re.findall(r"<[^>]*$|<[^>]*<", text)


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        data = await request.json()
        return dict(data) if isinstance(data, dict) else {}
    return dict(await request.post())


def _error(error: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"ok": False, "error": error}, status=status, headers=headers)
