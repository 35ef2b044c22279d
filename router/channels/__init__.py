"""The one list of channels: kind -> class. routes.yaml's `<kind>_configs` lists build them.

A channel's module (and its client library: python-telegram-bot, slack-sdk...) is imported only
when a config uses that kind: a router that pages through PagerDuty alone does not carry the
Telegram and Slack libraries (about 10 MiB).
"""

from __future__ import annotations

import importlib

from router.channels.base import AnyChannel
from router.channels.dryrun import DryRunChannel
from router.config import RouterConfig
from router.render import Renderer
from router.state import Destination

CHANNELS: dict[str, str] = {  # kind -> "module:class"
    "telegram": "router.channels.telegram:TelegramChannel",
    "slack": "router.channels.slack:SlackChannel",
    "email": "router.channels.email:EmailChannel",
    "pagerduty": "router.channels.pagerduty:PagerDutyChannel",
}


def channel_class(kind: str) -> type[AnyChannel]:
    module, name = CHANNELS[kind].split(":")
    cls: type[AnyChannel] = getattr(importlib.import_module(module), name)
    return cls


def kinds_used(config: RouterConfig) -> list[str]:
    return sorted({kind for receiver in config.receivers for kind, _, _ in receiver.channels()})


def build_channels(
    config: RouterConfig, renderer: Renderer, *, dry_run: bool
) -> dict[Destination, AnyChannel]:
    """One channel object per channel config of every receiver."""
    out: dict[Destination, AnyChannel] = {}
    for receiver in config.receivers:
        for kind, index, cfg in receiver.channels():
            dest = Destination(receiver.name, kind, index)
            if dry_run:
                out[dest] = DryRunChannel(dest, cfg, renderer)
            else:
                out[dest] = channel_class(kind)(cfg, renderer)
    return out
