"""One `telegram_configs` entry of routes.yaml: the bot and the chat (and topic) it posts in."""

from __future__ import annotations

from pydantic import SecretStr

from router.config.types import WithSecrets


class TelegramConfig(WithSecrets):
    """One `telegram_configs` entry: the bot, the chat (and topic) it posts in.

    `bot_token` or `bot_token_file`, as Alertmanager's telegram_config; `chat_id` is a number
    (negative for groups) or an @channel name.
    """

    secret_keys = ("bot_token",)

    bot_token: SecretStr
    chat_id: int | str
    message_thread_id: int | None = None
    api_url: str = "https://api.telegram.org"
    disable_notifications: bool = False
    send_resolved: bool | None = None
