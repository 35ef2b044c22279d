"""Telegram: python-telegram-bot's Bot, HTML messages edited in place, an inline Ack button."""

from __future__ import annotations

import warnings
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
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from router.channels.base import Channel, Delivered, Delivery, Digest, Failed, Message, RetryLater
from router.config import TelegramConfig
from router.render import fit_html, read_html, utf16_len

MAX_TEXT = 4096  # UTF-16 code units of the text after entity parsing (Bot API sendMessage)


def ack_callback(incident_id: str) -> str:
    return f"ack:{incident_id}"


class TelegramChannel(Channel[TelegramConfig]):
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

    def min_interval_s(self) -> float:
        # Telegram: about 1 message/s in a private chat, 20/min in a group (negative chat ids).
        chat = str(self.config.chat_id)
        return 3.0 if chat.startswith("-") or chat.startswith("@") else 1.0

    def _text(self, msg: Message) -> str:
        """The message as sent: Telegram HTML, balanced, at most MAX_TEXT visible characters."""
        return fit_html(msg.parts["message"], MAX_TEXT)

    def digest_fits(self, parts: dict[str, str]) -> bool:
        return utf16_len(read_html(parts["message"]).text) <= MAX_TEXT

    def _markup(self, msg: Message) -> InlineKeyboardMarkup | None:
        view = msg.view
        if view.status != "firing" or view.acked_by:
            return None
        return InlineKeyboardMarkup(
            [[InlineKeyboardButton("✅ Ack", callback_data=ack_callback(view.id))]]
        )

    async def _call(self, coro_factory: object) -> Delivery:
        try:
            if not self._ready:
                await self._bot.initialize()
                self._ready = True
            result: Delivery = await coro_factory()  # type: ignore[operator]
            return result
        except RetryAfter as exc:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wait = exc.retry_after
            seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
            return RetryLater(seconds, self._say(exc))
        except InvalidToken:
            return Failed("telegram: Unauthorized: the bot token was rejected")
        except (Forbidden, BadRequest) as exc:
            return Failed(self._say(exc))
        except TelegramError as exc:  # TimedOut, NetworkError, 5xx: worth another try
            return RetryLater(None, self._say(exc))

    def _say(self, exc: TelegramError) -> str:
        """The error for logs and the store, never with the token in it."""
        token = self.config.bot_token.get_secret_value()
        return f"telegram: {exc.message}".replace(token, "<bot_token>")

    async def send(self, msg: Message) -> Delivery:
        async def do() -> Delivery:
            sent = await self._bot.send_message(
                chat_id=self.config.chat_id,
                text=self._text(msg),
                parse_mode="HTML",
                message_thread_id=self.config.message_thread_id,
                disable_notification=self.config.disable_notifications
                or msg.view.severity not in ("critical", "error"),
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                reply_markup=self._markup(msg),
            )
            return Delivered(f"{sent.chat_id}:{sent.message_id}")

        return await self._call(do)

    async def update(self, msg: Message, ref: str) -> Delivery:
        chat_id, _, message_id = ref.rpartition(":")

        async def do() -> Delivery:
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
                if "message to edit not found" in text or "message can't be edited" in text:
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

        return await self._call(do)

    async def send_digest(self, digest: Digest) -> Delivery:
        async def do() -> Delivery:
            await self._bot.send_message(
                chat_id=self.config.chat_id,
                text=fit_html(digest.parts["message"], MAX_TEXT),
                parse_mode="HTML",
                message_thread_id=self.config.message_thread_id,
                disable_notification=self.config.disable_notifications,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
            )
            return Delivered("")

        return await self._call(do)

    async def aclose(self) -> None:
        await self._bot.shutdown()  # also when initialize() failed half-way: it closes the client
