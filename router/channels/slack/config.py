"""One `slack_configs` entry of routes.yaml: a bot token and channel, or an incoming webhook."""

from __future__ import annotations

from pydantic import SecretStr, model_validator

from router.config.types import WithSecrets


class SlackConfig(WithSecrets):
    """One `slack_configs` entry: a bot token and channel (Web API) or an incoming webhook.

    Exactly one of the two modes; ValueError at load otherwise. An incoming webhook cannot edit,
    so its updates are new messages.
    """

    secret_keys = ("bot_token", "webhook_url")

    bot_token: SecretStr | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"
    webhook_url: SecretStr | None = None
    send_resolved: bool | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> SlackConfig:
        if self.webhook_url is not None:
            if self.bot_token is not None:
                raise ValueError("set either webhook_url or bot_token + channel, not both")
        elif self.bot_token is None or not self.channel:
            raise ValueError("needs bot_token and channel (Web API) or webhook_url")
        return self
