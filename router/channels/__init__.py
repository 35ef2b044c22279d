"""The one list of channel kinds: each kind's config model, channel class and template parts.

routes.yaml's `<kind>_configs` keys are made from this list (router/config/model.py), its
templates are checked at load against the parts declared here (router/config/load.py), and
`build_channels` makes one channel per config. Adding a channel: its package
`router/channels/<kind>/` (config.py, channel.py), `templates/<kind>/`, `tests/fakes/<kind>.py`,
and one entry in CHANNELS (README, "Channels").

A channel's class (and its client library: python-telegram-bot, slack-sdk...) is imported only
when a config uses that kind: a router that pages through PagerDuty alone does not carry the
Telegram and Slack libraries. Config models are small and imported at load.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from router.channels.base import AnyChannel
from router.channels.dryrun import DryRunChannel
from router.render import Renderer
from router.state import Destination

if TYPE_CHECKING:
    from router.config import RouterConfig


@dataclass(frozen=True)
class Kind:
    """One channel kind: where its config model and class are, and the templates it needs.

    `config` and `channel` are "module:Class" paths. `parts` are the template parts a message
    is rendered from (`templates/<kind>/<part>.<markup>.j2`); `digest_parts` those of a digest
    (`templates/<kind>/digest/`), or None for a kind that sends no digests.
    """

    config: str
    channel: str
    parts: frozenset[str]
    digest_parts: frozenset[str] | None


CHANNELS: dict[str, Kind] = {
    "telegram": Kind(
        "router.channels.telegram.config:TelegramConfig",
        "router.channels.telegram.channel:TelegramChannel",
        parts=frozenset({"message"}),
        digest_parts=frozenset({"message"}),
    ),
    "slack": Kind(
        "router.channels.slack.config:SlackConfig",
        "router.channels.slack.channel:SlackChannel",
        parts=frozenset({"message"}),
        digest_parts=frozenset({"message"}),
    ),
    "email": Kind(
        "router.channels.email.config:EmailConfig",
        "router.channels.email.channel:EmailChannel",
        parts=frozenset({"subject", "text"}),  # and html, if there is one
        digest_parts=frozenset({"subject", "text"}),
    ),
    "pagerduty": Kind(
        "router.channels.pagerduty.config:PagerDutyConfig",
        "router.channels.pagerduty.channel:PagerDutyChannel",
        parts=frozenset({"summary"}),
        digest_parts=None,  # PagerDuty groups by dedup_key itself
    ),
}


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def config_model(kind: str) -> type[BaseModel]:
    """The pydantic model of one `<kind>_configs` entry; KeyError for an unknown kind."""
    cls: type[BaseModel] = _load(CHANNELS[kind].config)
    return cls


def channel_class(kind: str) -> type[AnyChannel]:
    """The channel class of `kind`, imported now; KeyError for an unknown kind."""
    cls: type[AnyChannel] = _load(CHANNELS[kind].channel)
    return cls


def template_parts() -> dict[str, frozenset[str]]:
    """Template folder -> the parts it must provide, for every kind: "telegram" and
    "telegram/digest" -> {"message"}, ... (the input of Renderer.check)."""
    out: dict[str, frozenset[str]] = {}
    for kind, entry in CHANNELS.items():
        out[kind] = entry.parts
        if entry.digest_parts is not None:
            out[f"{kind}/digest"] = entry.digest_parts
    return out


def build_channels(
    config: RouterConfig, renderer: Renderer, *, dry_run: bool
) -> dict[Destination, AnyChannel]:
    """One channel object per channel config of every receiver (DryRunChannel with dry_run)."""
    out: dict[Destination, AnyChannel] = {}
    for receiver in config.receivers:
        for kind, index, cfg in receiver.channels():
            dest = Destination(receiver.name, kind, index)
            if dry_run:
                out[dest] = DryRunChannel(dest, cfg, renderer)
            else:
                out[dest] = channel_class(kind)(cfg, renderer)
    return out
