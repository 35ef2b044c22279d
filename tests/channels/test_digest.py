"""Storm digests name every incident they cover (severity, alertname, group labels, alert count,
ack command) and are split over as many messages as the channel needs, each one accepted by the
service's fake; a whole storm through the app reaches the chat without a 429."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from router.channels.base import Delivered
from router.channels.email.channel import EmailChannel
from router.channels.email.config import EmailConfig
from router.channels.slack.channel import SlackChannel
from router.channels.slack.config import SlackConfig
from router.channels.telegram.channel import TelegramChannel
from router.channels.telegram.config import TelegramConfig
from router.models import IncidentView
from router.render import Renderer

from ..fakes.slack import FakeSlack, content_problem, texts
from ..fakes.telegram import text_problem, visible_text
from ..harness import TELEGRAM_ONLY, Fakes, firing_payload, post, settled
from ..incidents import alert, incident


def storm(groups: int = 200, alerts: int = 50) -> list[IncidentView]:
    """`groups` incidents of `alerts` alerts each: 10,000 alerts in 200 groups by default."""
    return [
        incident(
            *[
                alert(
                    {
                        "alertname": f"Alert{g}",
                        "severity": "critical",
                        "cluster": f"c{g}",
                        "i": str(i),
                    },
                    n=i,
                )
                for i in range(alerts)
            ],
            id=f"i{g:05d}",
            group_labels={"alertname": f"Alert{g}", "cluster": f"c{g}"},
        )
        for g in range(groups)
    ]


def named(text: str, view: IncidentView) -> bool:
    n = view.id.removeprefix("i").lstrip("0") or "0"
    line = f"🔴 Alert{n} · critical · {len(view.firing)} alerts · cluster=c{n} · /ack {view.id}"
    return line in text.replace("`", "").replace("*", "")


def telegram_channel(url: str = "http://unused", templates: Path | None = None) -> TelegramChannel:
    config = TelegramConfig(bot_token="123456:good-token", chat_id=1001, api_url=url)  # type: ignore[arg-type]
    return TelegramChannel(config, Renderer(templates))


def test_a_telegram_digest_of_200_groups_names_every_one_over_several_messages() -> None:
    views = storm()
    digests = telegram_channel().render_digests(views)
    assert len(digests) > 1
    shown = [visible_text(d.parts["message"]) for d in digests]
    for n, (digest, text) in enumerate(zip(digests, shown, strict=True)):
        assert text_problem(digest.parts["message"]) == ""
        assert text.startswith(
            f"🌩 200 incidents at once for oncall (10000 alerts firing) · "
            f"message {n + 1} of {len(digests)}"
        )
        assert all(named(text, v) for v in digest.views)
    assert [v.id for d in digests for v in d.views] == [v.id for v in views]


def test_one_line_per_incident_with_its_latest_view() -> None:
    first = storm(3, 50)
    later = [v.model_copy(update={"acked_by": "alice"}) for v in first[:2]]
    [digest] = telegram_channel().render_digests([*first, *later])
    text = visible_text(digest.parts["message"])
    assert [v.id for v in digest.views] == ["i00000", "i00001", "i00002"]
    assert text.count("acked by alice") == 2 and "/ack i00002" in text
    assert text.startswith("🌩 3 incidents at once")


async def test_slack_digests_are_accepted_and_name_every_incident(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    fake = FakeSlack()
    server = await aiohttp_server(fake.app())
    config = SlackConfig(
        bot_token="xoxb-good", channel="#alerts", api_url=str(server.make_url("/api/"))
    )  # type: ignore[arg-type]
    channel = SlackChannel(config, Renderer())
    views = storm(2500, 2)  # ~175,000 characters: more than 45 sections of 3,000
    try:
        digests = channel.render_digests(views)
        for digest in digests:
            assert isinstance(await channel.send_digest(digest), Delivered)
    finally:
        await channel.aclose()
    assert len(digests) > 1 and len(fake.posts()) == len(digests)
    body = "\n".join(t for p in fake.posts() for t in texts(p.payload))
    assert all(content_problem(p.payload) == "" for p in fake.posts())
    assert all(named(body, v) for v in views)


def test_an_email_digest_is_one_mail_naming_every_incident() -> None:
    config = EmailConfig.model_validate(
        {"to": "a@example.com", "from": "b@example.com", "smarthost": "smtp:25"}
    )
    [digest] = EmailChannel(config, Renderer()).render_digests(storm())
    assert digest.parts["subject"] == "[STORM] 200 incidents, 10000 alerts firing for oncall"
    assert (
        len(
            re.findall(
                r"^- \[CRITICAL\] Alert\d+, 50 alert\(s\), cluster=c\d+ \(#i\d{5}, ack with /ack i\d{5}\)$",
                digest.parts["text"],
                re.M,
            )
        )
        == 200
    )


@pytest.mark.parametrize("kind", ["telegram", "slack"])
def test_a_failing_digest_template_still_names_every_incident(kind: str, tmp_path: Path) -> None:
    (tmp_path / kind / "digest").mkdir(parents=True)
    for name in Renderer().parts(f"{kind}/digest").values():
        (tmp_path / name).write_text("{{ incidents[0].nope() }}")
    if kind == "telegram":
        channel: Any = telegram_channel(templates=tmp_path)
    else:
        channel = SlackChannel(SlackConfig(bot_token="x", channel="c"), Renderer(tmp_path))  # type: ignore[arg-type]
    views = storm()
    digests = channel.render_digests(views)
    text = "\n".join(d.parts["message"] for d in digests)
    assert all(
        f"- CRITICAL: Alert{n} cluster=c{n} (50 alert(s), #{v.id}, /ack {v.id})" in text
        for n, v in enumerate(views)
    )
    if kind == "telegram":
        assert all(text_problem(d.parts["message"]) == "" for d in digests)


async def test_a_storm_of_200_groups_reaches_telegram_whole_without_a_429(
    fakes: Fakes, make_client: Any
) -> None:
    client = await make_client(fakes, TELEGRAM_ONLY)
    incidents = []
    for g in range(200):
        answer = await post(client, firing_payload(50, f"storm{g}"))
        incidents += answer["incidents"]
    notes = await settled(client, timeout_s=120)
    assert len(notes) == 200 and {n["state"] for n in notes} == {"sent"}
    sends = fakes.telegram.sent()
    assert len(fakes.telegram.messages) == len(sends), "a 429 was answered: pacing failed"
    assert len(sends) < 40, "200 incidents should be a few digests"
    shown = "\n".join(visible_text(s["text"]) for s in sends)
    for g, incident_id in enumerate(incidents):
        assert f"#{incident_id}" in shown or f"/ack {incident_id}" in shown, f"storm{g} hidden"
