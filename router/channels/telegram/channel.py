"""Telegram: python-telegram-bot's Bot, HTML messages edited in place, an inline Ack button.

Bot API errors (core.telegram.org/bots/api, "Making requests": `ok: false`, `error_code`,
`description`, and `parameters` with `retry_after` or `migrate_to_chat_id`), as
python-telegram-bot raises them (`telegram/request/_baserequest.py`), classified once here:

| error | result |
|---|---|
| `RetryAfter` (429 `parameters.retry_after`) | RetryLater(retry_after) |
| `ChatMigrated` (400 `parameters.migrate_to_chat_id`: a group became a supergroup) | sent to the new chat, which is remembered |
| `TimedOut`, `NetworkError` (5xx, 429 without retry_after, connection errors) | RetryLater(backoff) |
| `InvalidToken` (401, 404), `Forbidden` (403: bot kicked or blocked) | Failed |
| `BadRequest` (400: chat not found, can't parse entities, message is too long...) | Failed |
| on an edit: "message is not modified" | Delivered (it already reads so) |
| on an edit: "message to edit not found", "message can't be edited" | sent anew |

Any other error propagates to delivery.py, which retries it a bounded number of times.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import timedelta

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    ReplyParameters,
)
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

# python-telegram-bot 22.2+: RetryAfter.retry_after as a timedelta (its documented opt-in); else
# reading it, or building the exception, warns (PTBDeprecationWarning) on every 429.
os.environ.setdefault("PTB_TIMEDELTA", "true")

from router.channels.base import Channel, Delivered, Delivery, Digest, Failed, Message, RetryLater
from router.channels.telegram.config import TelegramConfig
from router.render import fit_html, read_html, utf16_len

MAX_TEXT = 4096  # UTF-16 code units of the text after entity parsing (Bot API sendMessage)
GONE = ("message to edit not found", "message can't be edited", "message_id_invalid")


def ack_callback(incident_id: str) -> str:
    """The Ack button's callback_data for an incident (read by chatops/telegram.py)."""
    return f"ack:{incident_id}"


class TelegramChannel(Channel[TelegramConfig]):
    """HTML messages through the Bot API, edited in place, with an Ack button while firing;
    errors classified as the module docstring's table says."""

    kind = "telegram"

    def __init__(self, config: TelegramConfig, renderer: object) -> None:
        super().__init__(config, renderer)  # type: ignore[arg-type]
        self._bot = Bot(
            config.bot_token.get_secret_value(),
            base_url=f"{config.api_url.rstrip('/')}/bot",
            request=HTTPXRequest(
                connect_timeout=5, read_timeout=10, write_timeout=10, pool_timeout=5
            ),
        )
        self._ready = False

    def min_interval(self) -> timedelta:
        """1 s in a private chat, 3 s in a group or channel (negative id or @name): Telegram's
        published limits, about 1 message/s per chat and 20/min per group (Bots FAQ)."""
        chat = str(self.config.chat_id)
        return timedelta(seconds=3 if chat.startswith("-") or chat.startswith("@") else 1)

    def _text(self, msg: Message) -> str:
        """The message as sent: Telegram HTML, balanced, at most MAX_TEXT visible characters."""
        return fit_html(msg.parts["message"], MAX_TEXT)

    def digest_fits(self, parts: dict[str, str]) -> bool:
        """Whether the digest's visible text is at most MAX_TEXT UTF-16 units."""
        return utf16_len(read_html(parts["message"]).text) <= MAX_TEXT

    def _markup(self, msg: Message) -> InlineKeyboardMarkup | None:
        view = msg.view
        if view.status != "firing" or view.acked_by:
            return None
        return InlineKeyboardMarkup(
            [[InlineKeyboardButton("✅ Ack", callback_data=ack_callback(view.id))]]
        )

    def _chat(self) -> str:
        """The chat to post in: the configured one, or where Telegram said it moved."""
        chat = str(self.config.chat_id)
        for _ in range(len(self.moves)):  # a chain of moves, bounded
            if chat not in self.moves:
                break
            chat = self.moves[chat]
        return chat

    async def _call(self, do: Callable[[], Awaitable[Delivery]], chat: str) -> Delivery:
        """Run `do` (a Bot API call for `chat`) and classify what it raised (module docstring)."""
        try:
            if not self._ready:
                await self._bot.initialize()
                self._ready = True
            try:
                return await do()
            except ChatMigrated as exc:
                # A group upgraded to a supergroup: every later message goes to the new id.
                self.moves[chat] = str(exc.new_chat_id)
                if self.on_moved is not None:
                    await self.on_moved(chat, str(exc.new_chat_id))
                return await do()  # `do` reads the move; a second move in one attempt raises
        except RetryAfter as exc:
            wait = exc.retry_after  # a timedelta: PTB_TIMEDELTA, set above
            after = wait if isinstance(wait, timedelta) else timedelta(seconds=wait)
            return RetryLater(after, self._say(exc))
        except ChatMigrated as exc:
            return Failed(f"{self._say(exc)} (moved again at once)")
        except InvalidToken:
            return Failed("telegram: Unauthorized: the bot token was rejected")
        except (Forbidden, BadRequest) as exc:  # BadRequest is a NetworkError: caught first
            return Failed(self._say(exc))
        except NetworkError as exc:  # TimedOut, 5xx, connection errors: worth another try
            return RetryLater(None, self._say(exc))

    def _say(self, exc: TelegramError) -> str:
        """The error for logs and the store, never with the token in it."""
        token = self.config.bot_token.get_secret_value()
        return f"telegram: {exc.message}".replace(token, "<bot_token>")

    async def send(self, msg: Message) -> Delivery:
        """Post the incident's message: Delivered("<chat_id>:<message_id>")."""

        async def do() -> Delivery:
            sent = await self._bot.send_message(
                chat_id=self._chat(),
                text=self._text(msg),
                parse_mode="HTML",
                message_thread_id=self.config.message_thread_id,
                disable_notification=self.config.disable_notifications
                or msg.view.severity not in ("critical", "error"),
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                reply_markup=self._markup(msg),
            )
            return Delivered(f"{sent.chat_id}:{sent.message_id}")

        return await self._call(do, self._chat())

    async def update(self, msg: Message, ref: str) -> Delivery:
        """Edit the message `ref` in place, and reply to it when someone must be told again
        (an edit makes no sound); a message gone or too old is posted anew."""
        chat_id, _, message_id = ref.rpartition(":")

        async def do() -> Delivery:
            if chat_id in self.moves:  # the chat moved: its messages stay in the old group
                return await self.send(msg)
            try:
                await self._bot.edit_message_text(
                    chat_id=chat_id,
                    message_id=int(message_id),
                    text=self._text(msg),
                    parse_mode="HTML",
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                    reply_markup=self._markup(msg),
                )
            except BadRequest as exc:
                text = exc.message.lower()
                if any(gone in text for gone in GONE):
                    return await self.send(msg)  # gone or too old: post it again
                if "message is not modified" not in text:
                    raise
            if msg.alerting:
                # An edit makes no sound: tell the chat, in reply to the incident's message.
                await self._bot.send_message(
                    chat_id=chat_id,
                    text=f"🔁 #{msg.view.id} {msg.view.reason.value.replace('_', ' ')}: "
                    f"{len(msg.view.firing)} alert(s) firing",
                    message_thread_id=self.config.message_thread_id,
                    disable_notification=self.config.disable_notifications,
                    reply_parameters=ReplyParameters(
                        message_id=int(message_id), allow_sending_without_reply=True
                    ),
                )
            return Delivered(ref)

        return await self._call(do, chat_id)

    async def send_digest(self, digest: Digest) -> Delivery:
        """Post the digest as one message (no Ack button: each incident has its own)."""

        async def do() -> Delivery:
            await self._bot.send_message(
                chat_id=self._chat(),
                text=fit_html(digest.parts["message"], MAX_TEXT),
                parse_mode="HTML",
                message_thread_id=self.config.message_thread_id,
                disable_notification=self.config.disable_notifications,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )
            return Delivered("")

        return await self._call(do, self._chat())

    async def aclose(self) -> None:
        """Shut the Bot's HTTP client down."""
        await self._bot.shutdown()  # also when initialize() failed half-way: it closes the client
