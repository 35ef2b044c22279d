"""The Slack channel's messages against the fake Web API, which refuses what Slack refuses:
button URLs that are not absolute http(s) or over 3,000 characters, over 50 blocks, section text
over 3,000 characters; and nothing from alert data may mention anyone or open a half link."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from router.channels.base import Delivered, Failed, RetryLater
from router.channels.slack.channel import SlackChannel
from router.channels.slack.config import SlackConfig
from router.models import IncidentView
from router.render import Renderer

from ..fakes.slack import FakeSlack, content_problem, half_links, mentions, texts
from ..incidents import alert, incident


@pytest.fixture
async def slack(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[tuple[FakeSlack, str]]:
    fake = FakeSlack()
    server = await aiohttp_server(fake.app())
    yield fake, str(server.make_url("/api/"))


async def send(url: str, view: IncidentView, templates: Path | None = None) -> dict[str, Any]:
    config = SlackConfig(bot_token="xoxb-good", channel="#alerts", api_url=url)  # type: ignore[arg-type]
    ch = SlackChannel(config, Renderer(templates))
    try:
        result = await ch.send(ch.render(view))
    finally:
        await ch.aclose()
    assert isinstance(result, Delivered), result
    return ch._payload(ch.render(view))


def buttons(payload: dict[str, Any]) -> dict[str, str]:
    blocks = payload["attachments"][0]["blocks"]
    return {e["text"]["text"]: e.get("url", "") for e in blocks[-1]["elements"]}


@pytest.mark.parametrize(
    ("runbook", "dashboard", "buttoned"),
    [
        ("see wiki", "/d/x", set()),
        ("https://wiki.example/disk", "grafana.example/d/x", {"Runbook"}),
        ("javascript:alert(1)", "https://g.example/d/x?a=<1>", {"Dashboard"}),
        ("https://w.example/" + "a" * 3000, "http://g.example/d x", set()),
        ("https://w.example/" + "a" * 2900, "http://g.example:3000/d/x", {"Runbook", "Dashboard"}),
    ],
)
async def test_only_absolute_http_urls_become_buttons_the_rest_is_text(
    slack: tuple[FakeSlack, str], runbook: str, dashboard: str, buttoned: set[str]
) -> None:
    _, url = slack
    view = incident(alert(runbook_url=runbook, dashboard_url=dashboard))
    payload = await send(url, view)
    assert content_problem(payload) == ""
    got = buttons(payload)
    assert {k for k in got if k != "Acknowledge"} == buttoned
    body = "\n".join(texts(payload))
    if "Runbook" not in buttoned and len(runbook) < 1400:
        assert "Runbook: " + runbook.replace("<", "&lt;").replace(">", "&gt;") in body
    assert half_links(body.replace("&lt;", "")) == []


async def test_alert_data_never_mentions_and_the_fallback_is_escaped(
    slack: tuple[FakeSlack, str], tmp_path: Path
) -> None:
    fake, url = slack
    hostile = {"summary": "<!channel> down", "description": "<@U024BE7LH> <!here|here> <http://x|y"}
    view = incident(
        alert({"alertname": "<!everyone>", "severity": "critical"}, hostile, runbook_url="<!here>")
    )
    shipped = await send(url, view)
    (tmp_path / "slack").mkdir()
    (tmp_path / "slack" / "message.mrkdwn.j2").write_text("{{ incident.firing[0].labels.x.y() }}")
    fallback = await send(url, view, tmp_path)
    for payload in (shipped, fallback):
        for text in texts(payload):
            assert mentions(text) == [] and half_links(text) == []
    assert "&lt;!channel&gt; down" in fallback["attachments"][0]["blocks"][0]["text"]["text"]
    assert len(fake.posts()) == 2


async def test_a_template_mention_is_kept_and_a_half_link_is_shown_as_text(
    slack: tuple[FakeSlack, str], tmp_path: Path
) -> None:
    _, url = slack
    (tmp_path / "slack").mkdir()
    (tmp_path / "slack" / "message.mrkdwn.j2").write_text(
        "<!here> {{ incident.title }} <https://w.example/x|run\n\nbook>\n\n"
        "<https://w.example/y|half\n\nsee <https://w.example/z|"
    )
    payload = await send(url, incident(alert()), tmp_path)
    body = "\n".join(texts(payload))
    assert mentions(body) == ["<!here>"] * body.count("<!here>")
    assert "<https://w.example/x|run  book>" in body  # a link over a blank line stays whole
    assert "&lt;https://w.example/y|half" in body and "see &lt;https://w.example/z|" in body
    assert half_links(body) == []


async def test_a_long_description_is_split_over_sections_not_cut(
    slack: tuple[FakeSlack, str],
) -> None:
    _, url = slack
    description = " ".join(f"w{n}" for n in range(3000))  # ~14,000 characters, one paragraph
    payload = await send(url, incident(alert(annotations={"description": description})))
    assert content_problem(payload) == ""
    body = " ".join(texts(payload))
    assert all(f"w{n} " in body for n in range(0, 3000, 97)) and "w2999" in body


async def test_over_fifty_paragraphs_say_how_many_are_not_shown(
    slack: tuple[FakeSlack, str],
) -> None:
    _, url = slack
    alerts = [
        alert({"alertname": "DiskFull", "severity": "critical", "i": str(n)}, n=n)
        for n in range(80)
    ]
    payload = await send(url, incident(*alerts))
    assert content_problem(payload) == ""
    blocks = payload["attachments"][0]["blocks"]
    assert len(blocks) <= 50
    assert any("section(s) not shown: a Slack message holds 45" in t for t in texts(payload))
    assert "/ack k2x7m" in blocks[-2]["text"]["text"]


async def test_a_template_quote_stays_a_quote(slack: tuple[FakeSlack, str], tmp_path: Path) -> None:
    _, url = slack
    (tmp_path / "slack").mkdir()
    (tmp_path / "slack" / "message.mrkdwn.j2").write_text("> {{ incident.title }} 1 > 0")
    payload = await send(url, incident(alert({"alertname": "a>b<c", "severity": "x"})), tmp_path)
    assert texts(payload)[1] == "> a&gt;b&lt;c 1 > 0"


@pytest.mark.parametrize(("path", "expected"), [("/nope/", Failed("slack: 404")), ("", None)])
async def test_an_answer_that_is_not_json_is_classified_by_its_status(
    slack: tuple[FakeSlack, str], path: str, expected: Failed | None
) -> None:
    # A wrong api_url (or a proxy's HTML page) was an AttributeError with a traceback on every
    # attempt, retried until the notification died, instead of the status it answered.
    fake, url = slack
    fake.fail_next.append((503, "", {}))
    wrong = url.replace("/api/", path) if path else url
    config = SlackConfig(bot_token="xoxb-good", channel="#alerts", api_url=wrong)  # type: ignore[arg-type]
    ch = SlackChannel(config, Renderer(None))
    try:
        result = await ch.send(ch.render(incident(alert({"alertname": "A"}))))
    finally:
        await ch.aclose()
    if expected is not None:
        assert result == expected
    else:  # the fake's 503, a JSON error
        assert isinstance(result, RetryLater) and result.reason.startswith("slack: "), result
