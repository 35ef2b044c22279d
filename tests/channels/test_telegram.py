"""The Telegram channel's messages against the fake Bot API, which refuses what Telegram refuses:
HTML cut inside a tag, unknown tags or entities, over 4,096 visible UTF-16 units, bad buttons."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from router.channels.base import Delivered
from router.channels.telegram.channel import MAX_TEXT, TelegramChannel
from router.channels.telegram.config import TelegramConfig
from router.render import Renderer

from ..fakes.telegram import FakeTelegram, mentions, text_problem, visible_text
from ..incidents import alert, incident


@pytest.fixture
async def telegram(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[tuple[FakeTelegram, str]]:
    fake = FakeTelegram(flood_interval_s=0)
    server = await aiohttp_server(fake.app())
    yield fake, str(server.make_url("")).rstrip("/")


def channel(url: str, templates: Path | None = None) -> TelegramChannel:
    config = TelegramConfig(bot_token="123456:good-token", chat_id=1001, api_url=url)  # type: ignore[arg-type]
    return TelegramChannel(config, Renderer(templates))


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def send(fake_url: str, view: object, templates: Path | None = None) -> str:
    ch = channel(fake_url, templates)
    try:
        result = await ch.send(ch.render(view))  # type: ignore[arg-type]
    finally:
        await ch.aclose()
    assert isinstance(result, Delivered), result
    return result.ref


async def test_a_blank_line_inside_bold_and_a_long_description_are_sent_balanced(
    telegram: tuple[FakeTelegram, str],
) -> None:
    fake, url = telegram
    view = incident(alert(annotations={"summary": "a\n\nb", "description": "d" * 4100}))
    await send(url, view)
    [msg] = fake.messages.values()
    shown = visible_text(msg.text)
    assert units(shown) <= MAX_TEXT and text_problem(msg.text) == ""
    assert "▶ a\n\nb" in shown and "d" * 3000 in shown
    assert "/ack k2x7m" in shown  # the footer is always kept
    assert "paragraph(s) not shown: the message is limited to 4096 characters" in shown


async def test_a_user_template_wrapping_an_annotation_in_italics_is_cut_balanced(
    telegram: tuple[FakeTelegram, str], tmp_path: Path
) -> None:
    fake, url = telegram
    (tmp_path / "telegram").mkdir()
    (tmp_path / "telegram" / "message.html.j2").write_text(
        "{% for a in incident.firing %}<i>{{ a.annotations.description }}</i>\n\n{% endfor %}"
        "<b>#{{ incident.id }}</b> <div>not Telegram</div> <br> &nbsp;"
    )
    view = incident(alert(annotations={"description": "x\n\ny " * 1500}))
    await send(url, view, tmp_path)
    [msg] = fake.messages.values()
    assert text_problem(msg.text) == ""
    assert msg.text.startswith("<i>x\n\ny x") and "<div>" not in msg.text
    assert "#k2x7m" in visible_text(msg.text)


async def test_length_is_counted_on_the_visible_text_not_the_html(
    telegram: tuple[FakeTelegram, str],
) -> None:
    # Each alert: ~1,250 visible characters but ~6,200 of HTML source (&amp; is one character):
    # counted on the source, not even one alert would fit.
    fake, url = telegram
    alerts = [
        alert(
            {"alertname": "DiskFull", "severity": "critical", "instance": f"db-{n}"},
            {"summary": f"disk {n}", "description": "&" * 1200},
            n=n,
        )
        for n in range(3)
    ]
    await send(url, incident(*alerts))
    [msg] = fake.messages.values()
    shown = visible_text(msg.text)
    assert len(msg.text) > 3 * MAX_TEXT and units(shown) <= MAX_TEXT
    assert all(f"disk {n}" in shown for n in range(3)) and "not shown" not in shown


@pytest.mark.parametrize(
    ("text", "shown_units"),
    [("🔥" * 2100, 4200), ("é" * 4100, 4100), ("x" * 4096, 4096)],
)
def test_utf16_units_are_what_telegram_counts(text: str, shown_units: int) -> None:
    assert units(text) == shown_units
    assert (text_problem(text, None) == "message is too long") == (shown_units > MAX_TEXT)


async def test_emoji_count_twice_towards_the_limit(telegram: tuple[FakeTelegram, str]) -> None:
    fake, url = telegram
    view = incident(alert(annotations={"description": "🔥" * 1500 + "\n\n" + "🔥" * 1500}))
    await send(url, view)
    [msg] = fake.messages.values()
    assert text_problem(msg.text) == "" and "🔥" * 1500 in msg.text


async def test_alert_data_mentions_nobody_but_the_template_may(
    telegram: tuple[FakeTelegram, str], tmp_path: Path
) -> None:
    fake, url = telegram
    view = incident(
        alert(
            {"alertname": "@channel_admin", "severity": "critical", "owner": "@alice_ops"},
            {"summary": "ping @alice_ops", "description": "and @bob_the_sre"},
            runbook_url="ask @carol_admin",
        )
    )
    await send(url, view)
    (tmp_path / "telegram").mkdir()
    (tmp_path / "telegram" / "message.html.j2").write_text(
        "cc @oncall_lead: {{ incident.firing[0].annotations.summary }}"
    )
    await send(url, view, tmp_path)
    shipped, custom = fake.messages.values()
    assert mentions(shipped.text) == [] and "alice_ops" in visible_text(shipped.text)
    assert mentions(custom.text) == ["@oncall_lead"]


async def test_the_fallback_of_a_failing_template_is_escaped_and_mentions_nobody(
    telegram: tuple[FakeTelegram, str], tmp_path: Path
) -> None:
    fake, url = telegram
    (tmp_path / "telegram").mkdir()
    (tmp_path / "telegram" / "message.html.j2").write_text("{{ 1 / 0 }}")
    view = incident(alert(annotations={"summary": "<b>unclosed & @alice_ops"}))
    await send(url, view, tmp_path)
    [msg] = fake.messages.values()
    assert text_problem(msg.text) == "" and mentions(msg.text) == []
    assert "- <b>unclosed & @" in visible_text(msg.text)
