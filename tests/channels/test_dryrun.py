"""router/channels/dryrun.py: --dry-run renders with the real channel's templates and logs
each notification, edit and digest, with its fields, instead of sending; always Delivered."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from router.channels.base import Delivered
from router.channels.dryrun import DryRunChannel
from router.channels.slack.config import SlackConfig
from router.channels.telegram.config import TelegramConfig
from router.models import Reason
from router.render import Renderer
from router.state import Destination

from ..incidents import alert, incident

SLACK = Destination("team", "slack", 1)
SLACK_CONFIG = SlackConfig.model_validate({"bot_token": "xoxb-secret", "channel": "#alerts"})
TELEGRAM = Destination("team", "telegram", 0)
TELEGRAM_CONFIG = TelegramConfig.model_validate({"bot_token": "1:secret", "chat_id": 1})


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r.getMessage(), r.fields)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "router.delivery"
    ]


async def test_a_notification_is_logged_rendered_as_the_channel_would_send_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "router.delivery")
    channel = DryRunChannel(SLACK, SLACK_CONFIG, Renderer())
    assert channel.kind == "slack"  # the kind it stands in for: its templates
    view = incident(alert(), id="k3v9x", correlation_id="5d0c")
    msg = channel.render(view)
    assert msg.parts == Renderer().render("slack", view)
    assert await channel.send(msg) == Delivered("dry-run:k3v9x")
    assert logged(caplog) == [
        (
            "dry_run_notification",
            {
                "incident": "k3v9x",
                "destination": "team/slack[1]",
                "channel": "slack[1]",
                "reason": "first",
                "correlation_id": "5d0c",
                **msg.parts,
            },
        )
    ]


async def test_an_edit_is_logged_with_the_message_it_edits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "router.delivery")
    channel = DryRunChannel(TELEGRAM, TELEGRAM_CONFIG, Renderer())
    msg = channel.render(incident(alert(), id="k3v9x", reason=Reason.ACKED, acked_by="bob"))
    assert await channel.update(msg, "dry-run:k3v9x") == Delivered("dry-run:k3v9x")
    [(name, fields)] = logged(caplog)
    assert name == "dry_run_update"
    assert fields["edits"] == "dry-run:k3v9x" and fields["reason"] == "acked"
    assert fields["channel"] == "telegram[0]" and "message" in fields


async def test_a_digest_is_logged_with_every_incident(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "router.delivery")
    channel = DryRunChannel(TELEGRAM, TELEGRAM_CONFIG, Renderer())
    views = [incident(alert(n=i), id=f"i{i}") for i in range(3)]
    [digest] = channel.render_digests(views)
    assert await channel.send_digest(digest) == Delivered("")
    [(name, fields)] = logged(caplog)
    assert name == "dry_run_digest"
    assert fields == {
        "destination": "team/telegram[0]",
        "incidents": ["i0", "i1", "i2"],
        **digest.parts,
    }
    assert "3 incidents at once" in fields["message"]
