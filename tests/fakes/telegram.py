"""A fake Telegram Bot API: /bot<token>/<method>, the real JSON shapes, checks and errors.

It checks what Telegram checks for the calls alert-router makes: the token, the chat, text
length after entity parsing (4096 UTF-16 code units of the visible text), HTML that parses with
only Telegram's tags and entities (core.telegram.org/bots/api#html-style: "can't find end tag",
"unsupported start tag", "unexpected end tag", "unsupported entity"), inline keyboard buttons (a
url button takes an http(s) or tg:// URL: BUTTON_URL_INVALID; callback_data is 1-64 bytes:
BUTTON_DATA_INVALID), "message is not modified", "message to edit not found", and per-chat flood
control (one message per second in a private chat answers 429 with parameters.retry_after).
A group upgraded to a supergroup (`migrate()`) answers every call for its old id 400 "group chat
was upgraded to a supergroup chat" with `parameters.migrate_to_chat_id`, as the Bot API does
(core.telegram.org/bots/api#responseparameters). Tests queue failures with `fail_next`. `mentions()` lists the @username mentions Telegram would
find in a sent text.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from typing import Any

from aiohttp import web

ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "tg-spoiler",
    "span",
    "blockquote",
    "tg-emoji",
}
MAX_TEXT = 4096


@dataclass
class SentMessage:
    chat_id: int
    message_id: int
    text: str  # the HTML as sent
    reply_markup: dict[str, Any] | None
    thread_id: int | None
    silent: bool
    reply_to: int | None
    edits: int = 0


@dataclass
class FakeTelegram:
    tokens: set[str] = field(default_factory=lambda: {"123456:good-token"})
    chats: set[int] = field(default_factory=lambda: {1001, -1002})
    migrated: dict[int, int] = field(default_factory=dict)  # old group id -> supergroup id
    refuse_containing: str = ""  # a sendMessage whose text holds this: 400 can't parse entities
    messages: dict[tuple[int, int], SentMessage] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    flood_interval_s: float = 1.0  # per chat, for sendMessage; 0 disables flood control
    fail_next: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    delay_s: float = 0.0
    updates: list[dict[str, Any]] = field(default_factory=list)  # for getUpdates (long polling)
    callback_answers: list[dict[str, Any]] = field(default_factory=list)
    _last_send: dict[int, float] = field(default_factory=dict)
    _next_id: int = 1
    _next_update: int = 1

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self.handle)
        return app

    def sent(self, method: str = "sendMessage") -> list[dict[str, Any]]:
        return [params for m, params, _ in self.calls if m == method]

    def migrate(self, old: int, new: int) -> None:
        """Upgrade group `old` to supergroup `new`: the old id is refused from now on."""
        self.chats.discard(old)
        self.chats.add(new)
        self.migrated[old] = new

    def flood(self, retry_after: int, times: int = 1) -> None:
        for _ in range(times):
            self.fail_next.append(
                (
                    429,
                    {
                        "description": f"Too Many Requests: retry after {retry_after}",
                        "parameters": {"retry_after": retry_after},
                    },
                )
            )

    async def handle(self, request: web.Request) -> web.Response:
        import asyncio

        token, method = request.match_info["token"], request.match_info["method"]
        params = await _params(request)
        self.calls.append((method, params, time.monotonic()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if ":" not in token:
            return _error(404, "Not Found")
        if token not in self.tokens:
            return _error(401, "Unauthorized")
        if self.refuse_containing and self.refuse_containing in str(params.get("text", "")):
            return _error(400, "Bad Request: can't parse entities: refused by the test")
        if self.fail_next and method in ("sendMessage", "editMessageText"):
            status, body = self.fail_next.pop(0)
            return _error(
                status, body.get("description", "Internal Server Error"), body.get("parameters")
            )
        handler = {
            "getMe": self.get_me,
            "sendMessage": self.send_message,
            "editMessageText": self.edit_message_text,
            "answerCallbackQuery": self.answer_callback,
            "getUpdates": self.get_updates,
            "deleteWebhook": self.delete_webhook,
        }.get(method)
        if handler is None:
            return _error(404, "Not Found: method not found")
        return await handler(params)

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates, numbering it as Telegram does."""
        update = {"update_id": self._next_update, **update}
        self._next_update += 1
        self.updates.append(update)
        return update

    async def get_updates(self, params: dict[str, Any]) -> web.Response:
        import asyncio

        offset = _int(params.get("offset")) or 0
        # core.telegram.org/bots/api#getupdates: "An update is considered confirmed as soon as
        # getUpdates is called with an offset higher than its update_id": it is gone for all.
        self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), 1.0)
        while True:
            pending = [u for u in self.updates if u["update_id"] >= offset]
            if pending or time.monotonic() >= deadline:
                return _ok(pending)
            await asyncio.sleep(0.02)

    async def delete_webhook(self, params: dict[str, Any]) -> web.Response:
        return _ok(True)

    async def answer_callback(self, params: dict[str, Any]) -> web.Response:
        if not params.get("callback_query_id"):
            return _error(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        if len(str(params.get("text", ""))) > 200:
            return _error(400, "Bad Request: MESSAGE_TOO_LONG")
        self.callback_answers.append(params)
        return _ok(True)

    async def get_me(self, params: dict[str, Any]) -> web.Response:
        return _ok(
            {
                "id": 123456,
                "is_bot": True,
                "first_name": "alert-router test",
                "username": "ar_test_bot",
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    def _chat(self, params: dict[str, Any]) -> int | web.Response:
        try:
            chat_id = int(params.get("chat_id", ""))
        except ValueError:
            return _error(400, "Bad Request: chat not found")
        if chat_id in self.migrated:
            return _error(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": self.migrated[chat_id]},
            )
        if chat_id not in self.chats:
            return _error(400, "Bad Request: chat not found")
        return chat_id

    def _check_text(self, params: dict[str, Any]) -> str | web.Response:
        text = str(params.get("text", ""))
        problem = text_problem(text, params.get("parse_mode"), params.get("reply_markup"))
        if problem:
            return _error(400, f"Bad Request: {problem}")
        return text

    async def send_message(self, params: dict[str, Any]) -> web.Response:
        chat = self._chat(params)
        if isinstance(chat, web.Response):
            return chat
        text = self._check_text(params)
        if isinstance(text, web.Response):
            return text
        now = time.monotonic()
        last = self._last_send.get(chat)
        if self.flood_interval_s and last is not None and now - last < self.flood_interval_s:
            wait = max(1, round(self.flood_interval_s - (now - last)))
            return _error(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        self._last_send[chat] = now
        reply = params.get("reply_parameters") or {}
        msg = SentMessage(
            chat,
            self._next_id,
            text,
            params.get("reply_markup"),
            _int(params.get("message_thread_id")),
            _bool(params.get("disable_notification")),
            _int(reply.get("message_id")),
        )
        self._next_id += 1
        self.messages[(chat, msg.message_id)] = msg
        return _ok(_message_json(msg))

    async def edit_message_text(self, params: dict[str, Any]) -> web.Response:
        chat = self._chat(params)
        if isinstance(chat, web.Response):
            return chat
        msg = self.messages.get((chat, _int(params.get("message_id")) or 0))
        if msg is None:
            return _error(400, "Bad Request: message to edit not found")
        text = self._check_text(params)
        if isinstance(text, web.Response):
            return text
        if text == msg.text and params.get("reply_markup") == msg.reply_markup:
            return _error(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup of the message",
            )
        msg.text, msg.reply_markup = text, params.get("reply_markup")
        msg.edits += 1
        return _ok(_message_json(msg))


def text_problem(text: str, parse_mode: Any = "HTML", reply_markup: Any = None) -> str:
    """What Telegram's sendMessage/editMessageText would refuse in this text, or ""."""
    if parse_mode == "HTML":
        problem = html_problem(text)
        if problem:
            return f"can't parse entities: {problem}"
        visible = visible_text(text)
    else:
        visible = text
    if not visible.strip():
        return "message text is empty"
    if len(visible.encode("utf-16-le")) // 2 > MAX_TEXT:
        return "message is too long"
    return keyboard_problem(reply_markup)


def keyboard_problem(reply_markup: Any) -> str:
    """An inline keyboard's refusal: url buttons take http(s) or tg:// URLs, callback_data 1-64
    bytes (core.telegram.org/bots/api#inlinekeyboardbutton)."""
    if not isinstance(reply_markup, dict):
        return ""
    for row in reply_markup.get("inline_keyboard") or []:
        for button in row:
            url = button.get("url")
            if url is not None and not _button_url(str(url)):
                return "BUTTON_URL_INVALID"
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                return "BUTTON_DATA_INVALID"
    return ""


def _button_url(url: str) -> bool:
    from urllib.parse import urlsplit

    if any(ch.isspace() for ch in url):
        return False
    parts = urlsplit(url)
    return (parts.scheme in ("http", "https") and bool(parts.hostname)) or parts.scheme == "tg"


def visible_text(html: str) -> str:
    """The text Telegram shows for valid HTML: tags removed, entities decoded."""
    return unescape(_strip_tags(html))


def mentions(html: str) -> list[str]:
    """@username mentions (5-32 characters) Telegram finds in the visible text of a message."""
    import re

    return re.findall(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{4,31}(?![\w])", visible_text(html))


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problem = ""

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot") and not self.problem:
            self.problem = f'unsupported entity "&{name};"'

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS and not self.problem:
            self.problem = f'unsupported start tag "{tag}"'
        if not self.problem:
            self.problem = _attribute_problem(tag, dict(attrs))
        if not self.problem and not _may_nest(tag, self.stack):
            self.problem = f'"{tag}" can\'t be inside "{self.stack[-1]}"'
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.problem:
            return
        if not self.stack:
            self.problem = f'unexpected end tag "{tag}"'
        elif self.stack[-1] != tag:
            self.problem = f'can\'t find end tag corresponding to start tag "{self.stack[-1]}"'
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "&" in data and not self.problem:
            self.problem = 'unexpected "&": escape it as &amp;'


def _attribute_problem(tag: str, attrs: dict[str, str | None]) -> str:
    """What TDLib's parse_html (the Bot API's HTML mode) refuses in a tag's attributes."""
    if tag == "span" and attrs.get("class") != "tg-spoiler":
        return 'Tag "span" must have class "tg-spoiler"'
    if tag == "tg-emoji":
        emoji_id = attrs.get("emoji-id") or ""
        if not (emoji_id.isascii() and emoji_id.isdigit() and 0 < int(emoji_id) < 2**63):
            return "Invalid custom emoji identifier specified"
    return ""


FORMATTING = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "tg-spoiler", "span"}


def _may_nest(tag: str, stack: list[str]) -> bool:
    """The Bot API's nesting rules ("Formatting options"): bold, italic, underline,
    strikethrough and spoiler may contain and be inside anything but pre and code; blockquote is
    never nested; other entities never contain each other (<pre><code class> is one entity).
    How Telegram answers a breach is not documented: this fake refuses it."""
    if tag == "code" and stack[-1:] == ["pre"]:
        return True
    if any(t in ("pre", "code") for t in stack):
        return False
    return tag in FORMATTING or all(t in FORMATTING for t in stack)


def html_problem(text: str) -> str:
    checker = _Checker()
    checker.feed(text)
    checker.close()
    if checker.problem:
        return checker.problem
    if checker.stack:
        return f'can\'t find end tag corresponding to start tag "{checker.stack[-1]}"'
    if "<" in _strip_tags(text):
        return "unexpected <"
    return ""


def _strip_tags(text: str) -> str:
    import re

    return re.sub(r"<[^<>]*>", "", text)


async def _params(request: web.Request) -> dict[str, Any]:
    """Telegram takes form fields (JSON-encoded objects inside) or a JSON body; so does this."""
    if request.content_type == "application/json":
        body = await request.json()
        return dict(body) if isinstance(body, dict) else {}
    form = await request.post() if request.can_read_body else {}
    params: dict[str, Any] = {}
    for key, value in form.items():
        text = str(value)
        if text[:1] in "{[":
            try:
                params[key] = json.loads(text)
                continue
            except ValueError:
                pass
        params[key] = text
    params.update(request.query)
    return params


def _message_json(msg: SentMessage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "message_id": msg.message_id,
        "date": int(time.time()),
        "chat": {
            "id": msg.chat_id,
            "type": "supergroup" if msg.chat_id < 0 else "private",
            **({"title": "On-call"} if msg.chat_id < 0 else {"first_name": "Alice"}),
        },
        "from": {"id": 123456, "is_bot": True, "first_name": "alert-router test"},
        "text": unescape(_strip_tags(msg.text)),
    }
    if msg.edits:
        out["edit_date"] = int(time.time())
    if msg.reply_markup:
        out["reply_markup"] = msg.reply_markup
    return out


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _bool(value: Any) -> bool:
    return str(value).lower() in ("true", "1")


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)
