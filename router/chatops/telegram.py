"""Telegram inbound: python-telegram-bot's Application, fed by our webhook route or long polling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_right
from datetime import timedelta
from typing import Protocol

import orjson
from aiohttp import web
from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from router.auth import secret_matches
from router.chatops.commands import (
    NAMES,
    Actor,
    Allow,
    Command,
    Commands,
    Policy,
    display_name,
    parse,
)
from router.chatops.config import TelegramChatops
from router.errors import StoreError
from router.logs import event
from router.render import utf16_len, utf16_prefix
from router.store import Store

log = logging.getLogger("router.chatops.telegram")
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Bot API limits (core.telegram.org/bots/api): sendMessage text 1-4096 characters after entity
# parsing, counted in UTF-16 code units; answerCallbackQuery text 0-200 characters.
MAX_TEXT = 4096
MAX_ANSWER = 200
# setWebhook (core.telegram.org/bots/api#setwebhook): "In case of an unsuccessful request, we
# will give up after a reasonable amount of attempts": an update may come again (Update's
# update_id is "the update's unique identifier"). The ids of this many last updates are kept.
SEEN_UPDATES = 10_000
# With replicas (PostgreSQL), the ids are kept in the database this long, for all of them.
SEEN_FOR = timedelta(days=1)
MAX_START_DELAY = timedelta(minutes=5)  # between tries to reach Telegram at start, doubling


class PlannerRole(Protocol):
    """Whether this replica plans (router.roles.Role): long polling runs only while it does,
    so that exactly one replica takes each update from getUpdates."""

    @property
    def is_planner(self) -> bool:
        """Whether this replica is the planner now."""

    async def wait_for(self, *, planner: bool) -> None:
        """Return once this replica is the planner (`planner=True`) or a standby (False)."""


def fit(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-16 code units (as Telegram counts), "…" marking a cut."""
    if utf16_len(text) <= limit:
        return text
    # The longest prefix that leaves one unit for the "…".
    return text[: bisect_right(utf16_prefix(text), limit - 1) - 1] + "…"


class TelegramBot:
    """Answers /ack, /unack, /alerts, /help and the Ack button in the allowed chats."""

    def __init__(
        self,
        config: TelegramChatops,
        commands: Commands,
        store: Store,
        role: PlannerRole | None = None,
    ) -> None:
        """In polling mode with a `role`, getUpdates runs only while the role is the planner
        (one replica polls); without one (one process) it always runs."""
        self.config = config
        self.role = role
        self.commands = commands
        self.store = store
        self.policy = telegram_policy(config)
        builder = Application.builder().token(config.bot_token.get_secret_value())
        builder = builder.base_url(f"{config.api_url.rstrip('/')}/bot")
        if config.mode == "webhook":
            builder = builder.updater(None)
        self.app = builder.build()
        self.app.add_handler(CommandHandler([*NAMES, "start"], self._on_command))
        self.app.add_handler(CallbackQueryHandler(self._on_button, pattern=r"^ack:"))
        self.app.add_error_handler(self._on_error)
        self._starter: asyncio.Task[None] | None = None
        self._seen: dict[int, None] = {}  # update_ids of the last SEEN_UPDATES webhook updates

    async def start(self) -> None:
        """Start in the background: the router serves webhooks even while Telegram is unreachable."""
        self._starter = asyncio.create_task(
            self._start_with_retries(), name="telegram chatops start"
        )

    async def _start_with_retries(self) -> None:
        delay = timedelta(seconds=1)
        while True:
            try:
                await self.app.initialize()
                break
            except TelegramError as exc:
                event(
                    log,
                    logging.ERROR,
                    "telegram_chatops_unavailable",
                    error=self._say(exc),
                    retry_in_s=delay.total_seconds(),
                )
                await asyncio.sleep(delay.total_seconds())
                delay = min(delay * 2, MAX_START_DELAY)
        await self.app.start()
        event(log, logging.INFO, "telegram_chatops_started", mode=self.config.mode)
        if self.config.mode == "polling":
            await self._poll()

    async def _poll(self) -> None:
        """Long polling: for ever without a role, else while this replica is the planner."""
        updater = self.app.updater
        if updater is None:
            return
        if self.role is None:
            await updater.start_polling(poll_interval=0.0, timeout=10)
            return
        while True:
            await self.role.wait_for(planner=True)
            await updater.start_polling(poll_interval=0.0, timeout=10)
            event(log, logging.INFO, "telegram_polling", polling=True)
            await self.role.wait_for(planner=False)
            await updater.stop()  # the next planner's getUpdates takes what is not confirmed
            event(log, logging.INFO, "telegram_polling", polling=False)

    @property
    def polling(self) -> bool:
        """Whether this replica is fetching updates with getUpdates now."""
        return self.app.updater is not None and self.app.updater.running

    def _say(self, exc: TelegramError) -> str:
        return str(exc.message).replace(self.config.bot_token.get_secret_value(), "<bot_token>")

    async def aclose(self) -> None:
        """Stop starting, polling and the Application, in that order."""
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    async def handle_webhook(self, request: web.Request) -> web.Response:
        """POST /telegram/webhook: Telegram's update, checked by its secret header."""
        if not self.app.running:
            return web.json_response(
                {"status": "error", "error": "not connected to Telegram yet"}, status=503
            )
        secret = self.config.webhook_secret.get_secret_value() if self.config.webhook_secret else ""
        given = request.headers.get(SECRET_HEADER, "")
        if not secret_matches(given, secret):  # any bytes: a header need not be UTF-8
            event(
                log,
                logging.WARNING,
                "telegram_webhook_rejected",
                reason="bad secret",
                peer=request.remote or "",
            )
            return web.json_response(
                {"status": "error", "error": f"missing or wrong {SECRET_HEADER}"}, status=401
            )
        try:
            data = orjson.loads(await request.read())
            update = Update.de_json(data, self.app.bot)
        except Exception as exc:  # untrusted input: whatever de_json raises is a bad request
            return web.json_response(
                {"status": "error", "error": f"not a Telegram update: {exc}"}, status=400
            )
        if update is None:
            return web.json_response(
                {"status": "error", "error": "not a Telegram update"}, status=400
            )
        repeated = update.update_id in self._seen
        queue = self.commands.queue
        if not repeated and queue is not None:  # replicas: it may have reached another one
            try:
                repeated = not await queue.first_update(update.update_id, SEEN_FOR)
            except StoreError as exc:  # not run: Telegram sends it again later
                event(log, logging.ERROR, "telegram_update_store_error", error=str(exc))
                return web.json_response(
                    {"status": "error", "error": "the database is unavailable"}, status=503
                )
        if repeated:  # sent again: it was (or is being) handled once
            event(log, logging.INFO, "telegram_update_repeated", update_id=update.update_id)
            return web.json_response({"status": "ok", "repeated": True})
        self._seen[update.update_id] = None
        if len(self._seen) > SEEN_UPDATES:
            del self._seen[next(iter(self._seen))]
        await self.app.update_queue.put(update)
        return web.json_response({"status": "ok"})

    def _actor(self, update: Update) -> Actor | None:
        user, chat = update.effective_user, update.effective_chat
        if user is None or chat is None:
            return None
        name = display_name(f"@{user.username}" if user.username else user.full_name)
        return Actor("telegram", str(user.id), name, str(chat.id))

    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        actor = self._actor(update)
        if message is None or actor is None or not message.text:
            return
        refusal = self.commands.authorize(actor, self.policy)
        first, _, rest = message.text.partition(" ")
        name = first.lstrip("/").split("@", 1)[0]
        if refusal is not None:
            await message.reply_text(fit(refusal, MAX_TEXT))
            return
        command = parse("help" if name == "start" else name, rest)
        if (
            isinstance(command, Command)
            and command.incident_id is None
            and message.reply_to_message
        ):
            ref = f"{message.chat_id}:{message.reply_to_message.message_id}"
            replied = await self.store.incident_for_message("telegram", ref)
            if replied:
                command = Command(command.name, replied, command.duration, command.comment)
        reply = (
            command
            if isinstance(command, str)
            else await self.commands.run(command, actor, self.policy)
        )
        await message.reply_text(fit(reply, MAX_TEXT))

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        actor = self._actor(update)
        if query is None or actor is None:
            return
        refusal = self.commands.authorize(actor, self.policy)
        if refusal is not None:
            await query.answer(fit(refusal, MAX_ANSWER), show_alert=True)
            return
        incident_id = (query.data or "").removeprefix("ack:")
        reply = await self.commands.press_ack(incident_id, actor, self.policy)
        await query.answer(fit(reply, MAX_ANSWER))

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        event(log, logging.ERROR, "telegram_chatops_error", error=repr(context.error))
        log.debug("telegram_chatops_error", exc_info=context.error)


TELEGRAM_BOT = web.AppKey("telegram_bot", TelegramBot)  # the app's bot, when configured


def telegram_policy(config: TelegramChatops) -> Policy:
    """Who may act, by the ids in routes.yaml: chats and users, per receiver."""

    def allow(chats: list[int] | None, users: list[int] | None) -> Allow:
        return Allow(
            frozenset(str(c) for c in (config.allowed_chats if chats is None else chats)),
            frozenset(str(u) for u in (config.allowed_users if users is None else users)),
        )

    return Policy(
        "telegram",
        None,
        allow(None, None),
        {n: allow(s.allowed_chats, s.allowed_users) for n, s in config.receivers.items()},
    )
