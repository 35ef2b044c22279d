"""The `chatops.telegram` and `chatops.slack` sections of routes.yaml: who may ack, from where.

People and places are named by the platform's immutable ids: a name (of a user, a channel)
can be changed or reused, so it authorizes nobody, and the error says how to find the id.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator

from router.config.types import Strict, WithSecrets


def _id_checker(pattern: str, what: str, how: str) -> Any:
    """A validator for a chat platform's immutable id; a name gets an error saying how to find
    the id (names can be changed and reused, so they authorize nobody)."""
    compiled = re.compile(pattern)

    def check(value: Any) -> str:
        text = str(value)
        if isinstance(value, bool) or not compiled.fullmatch(text):
            raise ValueError(f"{text!r} is not {what}: names can be changed or reused; {how}")
        return text

    return check


SlackTeamId = Annotated[
    str,
    BeforeValidator(
        _id_checker(
            r"[TE][A-Z0-9]+",
            "a Slack workspace id (T…)",
            "give the id, as in the address of Slack in a browser (app.slack.com/client/T…/)"
            " or in the router's refusal",
        )
    ),
]
SlackChannelId = Annotated[
    str,
    BeforeValidator(
        _id_checker(
            r"[CGD][A-Z0-9]+",
            "a Slack channel id (C…)",
            "give the id, shown at the bottom of the channel's details (About) in Slack",
        )
    ),
]
SlackUserId = Annotated[
    str,
    BeforeValidator(
        _id_checker(
            r"[UW][A-Z0-9]+",
            "a Slack member id (U… or W…)",
            "give the id: in Slack, the user's profile, ⋮, Copy member ID",
        )
    ),
]
TelegramChatId = Annotated[
    int,
    BeforeValidator(
        _id_checker(
            r"-?[1-9][0-9]*",
            "a Telegram chat id (a number, negative for groups)",
            "give the numeric id, which the router's refusal in that chat tells (chat …)",
        )
    ),
]
TelegramUserId = Annotated[
    int,
    BeforeValidator(
        _id_checker(
            r"[1-9][0-9]*",
            "a Telegram user id (a number)",
            "give the numeric id, which the router's refusal tells the user (user id …)",
        )
    ),
]


def _some_places(places: list[Any] | None) -> list[Any] | None:
    if places == []:
        raise ValueError(
            "empty: nobody could ack this receiver's incidents; list ids, or leave the key out"
            " to use the global list"
        )
    return places


class TelegramScope(Strict):
    """Who may ack one receiver's incidents from Telegram; an unset key takes the global one."""

    allowed_chats: Annotated[list[TelegramChatId] | None, AfterValidator(_some_places)] = None
    allowed_users: list[TelegramUserId] | None = None


class TelegramChatops(WithSecrets):
    """`chatops.telegram`: the bot that takes /ack, how updates arrive, who may use it."""

    secret_keys = ("bot_token", "webhook_secret")

    bot_token: SecretStr
    api_url: str = "https://api.telegram.org"
    mode: Literal["webhook", "polling"] = "webhook"
    webhook_secret: SecretStr | None = None
    allowed_chats: list[TelegramChatId] = Field(default_factory=list)
    allowed_users: list[TelegramUserId] = Field(default_factory=list)
    receivers: dict[str, TelegramScope] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> TelegramChatops:
        if self.mode == "webhook" and self.webhook_secret is None:
            raise ValueError(
                "mode webhook needs webhook_secret (checked against X-Telegram-Bot-Api-Secret-Token)"
            )
        if not self.allowed_chats:
            raise ValueError("allowed_chats must list the chat ids that may use /ack")
        return self


class SlackScope(Strict):
    """Who may ack one receiver's incidents from Slack; an unset key takes the global one."""

    allowed_channels: Annotated[list[SlackChannelId] | None, AfterValidator(_some_places)] = None
    allowed_users: list[SlackUserId] | None = None


class SlackChatops(WithSecrets):
    """`chatops.slack`: the app's signing secret, workspace, and who may use /ack."""

    secret_keys = ("bot_token", "signing_secret")

    bot_token: SecretStr | None = None
    api_url: str = "https://slack.com/api/"
    signing_secret: SecretStr
    team_id: SlackTeamId
    allowed_channels: list[SlackChannelId] = Field(min_length=1)
    allowed_users: list[SlackUserId] = Field(default_factory=list)
    receivers: dict[str, SlackScope] = Field(default_factory=dict)
