"""The one list of channels: kind -> class. routes.yaml's `<kind>_configs` lists build them."""

from __future__ import annotations

from router.channels.base import AnyChannel, Destination
from router.channels.dryrun import DryRunChannel
from router.channels.email import EmailChannel
from router.channels.pagerduty import PagerDutyChannel
from router.channels.slack import SlackChannel
from router.channels.telegram import TelegramChannel
from router.config import RouterConfig
from router.render import Renderer

CHANNELS: dict[str, type[AnyChannel]] = {
    c.kind: c for c in (TelegramChannel, SlackChannel, EmailChannel, PagerDutyChannel)
}


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
                out[dest] = CHANNELS[kind](cfg, renderer)
    return out
