"""Random alerts (any Unicode, markup characters, huge and empty values, many alerts, bad URLs)
rendered for every channel with the shipped templates and with failing ones: what would be sent
is accepted by the fakes' validators, and alert data never mentions anyone."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.channels.base import Message
from router.channels.email.channel import EmailChannel
from router.channels.email.config import EmailConfig
from router.channels.pagerduty.channel import PagerDutyChannel
from router.channels.pagerduty.config import PagerDutyConfig
from router.channels.slack.channel import SlackChannel
from router.channels.slack.config import SlackConfig
from router.channels.telegram.channel import TelegramChannel
from router.channels.telegram.config import TelegramConfig
from router.models import AlertView, IncidentView
from router.render import VOID_TAGS, Renderer, http_url

from ..fakes.slack import content_problem, half_links, texts
from ..fakes.slack import mentions as slack_mentions
from ..fakes.telegram import html_problem, text_problem, visible_text
from ..fakes.telegram import mentions as tg_mentions
from ..incidents import alert, incident

MARKUP = [
    "<",
    ">",
    "&",
    "&amp;",
    "&lt;",
    "&nbsp;",
    '"',
    "'",
    "`",
    "*",
    "_",
    "~",
    "|",
    "\n",
    "\n\n",
    "\r",
    "\t",
    "\u2028",
    "\x00",
    "\x85",
    "🔥",
    "é",
    "\u200d",
    "<b>",
    "</b>",
    "<i>",
    "</i>",
    "<a href='https://x.example'>",
    "</a>",
    "<div>",
    "<!--",
    "<!channel>",
    "<!here>",
    "<@U024BE7LH>",
    "<http://x.example|y>",
    "<https://x.example|",
    "@alice_ops",
    "@channel",
    "```",
    "${x}",
    "{{ x }}",
    "{% if %}",
]
URLS = [
    "",
    "see wiki",
    "/d/x",
    "https://wiki.example/runbooks/disk",
    "http://g.example:3000/d/x?a=1&b=<2>",
    "javascript:alert(1)",
    "https://x.example/" + "a" * 3100,
    "https://x.example/a b",
    "tg://resolve?domain=x",
]

pieces = st.one_of(st.text(max_size=12), st.sampled_from(MARKUP))
values = st.one_of(
    st.lists(pieces, max_size=8).map("".join),
    st.builds(lambda p, n: p * n, pieces, st.integers(200, 1500)),  # huge
)
label_names = st.one_of(
    st.sampled_from(["instance", "job", "team", "@owner", "a<b"]), st.text(min_size=1, max_size=8)
)


@st.composite
def alerts(draw: Any, n: int) -> AlertView:
    labels = {
        "alertname": draw(values) or "X",
        "severity": draw(st.sampled_from(["critical", "warning", "", "<b>"])),
    }
    labels.update(draw(st.dictionaries(label_names, values, max_size=4)))
    annotations = draw(
        st.dictionaries(st.sampled_from(["summary", "description", "x"]), values, max_size=3)
    )
    return alert(
        labels,
        annotations,
        status=draw(st.sampled_from(["firing", "firing", "resolved"])),
        n=n,
        runbook_url=draw(st.sampled_from(URLS)),
        dashboard_url=draw(st.sampled_from(URLS)),
        silence_url=draw(st.sampled_from(URLS[:4])),
    )


@st.composite
def incidents(draw: Any) -> IncidentView:
    count = draw(st.one_of(st.integers(1, 6), st.integers(30, 120)))
    first = draw(alerts(0))
    rest = [first.model_copy(update={"fingerprint": f"{n:016x}"}) for n in range(1, count)]
    view = incident(first, *rest, id=draw(st.sampled_from(["k2x7m", "a1"])))
    return view.model_copy(
        update={"acked_by": draw(st.sampled_from([None, "@alice_ops", "<!here>"]))}
    )


@pytest.fixture(scope="module")
def renderers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Renderer]:
    """The shipped templates, and an override whose every template fails at render time."""
    failing = tmp_path_factory.mktemp("failing")
    for kind in ("telegram", "slack", "email", "pagerduty"):
        for sub in ("", "/digest"):
            for name in Renderer().parts(kind + sub).values():
                (failing / name).parent.mkdir(parents=True, exist_ok=True)
                (failing / name).write_text("{{ incident.firing[0].labels.nope() }}")
    return {"shipped": Renderer(), "failing": Renderer(failing)}


class _WellFormed(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problem = ""
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v or "" for k, v in attrs if k == "href"]
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problem = self.problem or f"</{tag}> closes nothing open"


def email_html_problem(html: str) -> str:
    """An email HTML body's fault: an end tag that closes nothing, a tag left open, a bad href."""
    checker = _WellFormed()
    checker.feed(html)
    checker.close()
    bad = [h for h in checker.hrefs if not http_url(h)]
    return (
        checker.problem
        or (f"<{checker.stack[-1]}> left open" if checker.stack else "")
        or (f"href {bad[0]!r}" if bad else "")
    )


def check_telegram(channel: TelegramChannel, msg: Message) -> None:
    text = channel._text(msg)
    markup = channel._markup(msg)
    assert text_problem(text, "HTML", markup.to_dict() if markup else None) == ""
    assert tg_mentions(text) == []


def check_slack(payload: dict[str, Any]) -> None:
    assert content_problem(payload) == ""
    for text in texts(payload):
        assert slack_mentions(text) == [] and half_links(text) == []


CONFIGS = {
    "telegram": TelegramChannel(TelegramConfig(bot_token="1:x", chat_id=1), Renderer()),  # type: ignore[arg-type]
}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(view=incidents(), storm=st.lists(incidents(), min_size=1, max_size=4))
@pytest.mark.parametrize("templates", ["shipped", "failing"])
def test_what_would_be_sent_is_accepted(
    renderers: dict[str, Renderer], templates: str, view: IncidentView, storm: list[IncidentView]
) -> None:
    renderer = renderers[templates]
    telegram = TelegramChannel(TelegramConfig(bot_token="1:x", chat_id=1), renderer)  # type: ignore[arg-type]
    slack = SlackChannel(SlackConfig(bot_token="x", channel="c"), renderer)  # type: ignore[arg-type]
    email = EmailChannel(
        EmailConfig.model_validate(
            {"to": "a@example.com", "from": "b@example.com", "smarthost": "s:25"}
        ),
        renderer,
    )
    pagerduty = PagerDutyChannel(PagerDutyConfig(routing_key="k"), renderer)  # type: ignore[arg-type]

    check_telegram(telegram, telegram.render(view))
    check_slack(slack._payload(slack.render(view)))
    mail = email.render(view)
    assert email_html_problem(mail.parts["html"]) == ""
    event = pagerduty.event(pagerduty.render(view))
    assert len(event.get("payload", {}).get("summary", "")) <= 1024

    storm = [v.model_copy(update={"id": f"s{n}"}) for n, v in enumerate(storm)]
    for digest in telegram.render_digests(storm):
        assert text_problem(telegram_fit(digest.parts["message"])) == ""
    for digest in slack.render_digests(storm):
        check_slack(slack.digest_payload(digest))
    for digest in email.render_digests(storm):
        assert all(f"#s{n}" in digest.parts["text"] for n in range(len(storm)))


def telegram_fit(text: str) -> str:
    from router.channels.telegram.channel import MAX_TEXT
    from router.render import fit_html

    return fit_html(text, MAX_TEXT)


TAGS = [
    "<b>",
    "</b>",
    "<i>",
    "</i>",
    "<code>",
    "</code>",
    "<pre>",
    "</pre>",
    "<blockquote>",
    "</blockquote>",
    '<a href="https://x.example/?a=1&amp;b=2">',
    "</a>",
    "<a href=see>",
    "<p>",
    "</p>",
    "<br>",
    "<br/>",
    "<tg-spoiler>",
    "</tg-spoiler>",
    "<span class=x>",
    "</span>",
    "<!-- c -->",
    "<!DOCTYPE html>",
    "<script>",
    "</script>",
    "<b",
    "</",
    "&#128293;",
    "&#x;",
]
template_output = st.lists(
    st.one_of(st.text(max_size=20), st.sampled_from(MARKUP + TAGS)), max_size=60
).map("".join)


@settings(max_examples=150, deadline=None)
@given(html=template_output, limit=st.integers(200, 5000))
def test_any_template_output_is_sent_as_html_telegram_accepts(html: str, limit: int) -> None:
    from router.render import fit_html, read_html, split_html, utf16_len

    fitted = fit_html(html, limit)
    assert html_problem(fitted) == "" and utf16_len(visible_text(fitted)) <= limit
    pieces = split_html(html, limit)
    assert all(html_problem(p) == "" and utf16_len(visible_text(p)) <= limit for p in pieces)
    assert "".join(visible_text(p) for p in pieces) == read_html(html).text


@settings(max_examples=150, deadline=None)
@given(text=template_output, limit=st.integers(50, 3000))
def test_any_template_output_is_split_into_whole_slack_mrkdwn(text: str, limit: int) -> None:
    from router.render import split_mrkdwn

    pieces = split_mrkdwn(text, limit)
    assert all(len(p) <= limit and half_links(p) == [] for p in pieces)
