"""Rendered notifications for captured payloads, compared with reviewed golden files.

`make golden` (UPDATE_GOLDEN=1) rewrites tests/golden/; review the diff like code.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from router.channels import channel_class, template_parts
from router.config import parse_config
from router.models import IncidentView, WebhookPayload
from router.pipeline import Pipeline
from router.render import (
    Renderer,
    balanced_html,
    html_link,
    http_url,
    human_duration,
    read_html,
    slack_link,
    split_html,
    utf16_len,
)
from router.state import State

from .fakes.slack import mentions as slack_mentions
from .fakes.telegram import html_problem, visible_text
from .fakes.telegram import mentions as tg_mentions
from .helpers import ROOT, fixture_json

GOLDEN = Path(__file__).resolve().parent / "golden"
NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
KINDS = ("telegram", "slack", "email", "pagerduty")

CONFIG = """
receivers:
  - name: oncall
    telegram_configs: [{bot_token: "1:t", chat_id: 1}]
    slack_configs: [{bot_token: x, channel: c}]
    email_configs: [{to: a@example.com, from: b@example.com, smarthost: "smtp:25"}]
    pagerduty_configs: [{routing_key: k}]
route: {receiver: oncall}
runbooks:
  - matchers: ['alertname="DiskFull"']
    dashboard_url: "https://grafana.example.com/d/disk?var-instance={{ labels.instance | urlencode }}"
"""

# case -> the fixtures posted in order; the last notification is rendered.
CASES = {
    "firing-3": ["firing-group-3-alerts"],
    "partial-resolve": ["firing-group-3-alerts", "mixed-firing-resolved"],
    "resolved": ["firing-group-3-alerts", "mixed-firing-resolved", "resolved-group"],
    "truncated-escaped": ["truncated-max-alerts-2"],
    "bare-alert": ["minimal-alert-group-by-all"],
}


def incident_for(fixtures: list[str]) -> IncidentView:
    ids = (f"k{n}x7m" for n in itertools.count(2))
    pipeline = Pipeline(parse_config(CONFIG), lambda: next(ids))
    state = State()
    views = []
    for i, name in enumerate(fixtures):
        payload = WebhookPayload.model_validate(fixture_json(name))
        plan = pipeline.ingest(payload, state, NOW + timedelta(minutes=i), "cid")
        views += [o.view for o in plan.outbox]
    return views[-1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, kind: str) -> None:
    parts = Renderer().render(kind, incident_for(CASES[case]))
    text = "".join(f"===== {part}\n{body}\n" for part, body in sorted(parts.items()))
    path = GOLDEN / kind / f"{case}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run make golden and review it"
    assert text == path.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_telegram_html_is_balanced_and_allowed(case: str) -> None:
    message = Renderer().render("telegram", incident_for(CASES[case]))["message"]
    assert html_problem(message) == ""


def test_a_failing_override_template_falls_back_to_plain_text(tmp_path: Path) -> None:
    (tmp_path / "telegram").mkdir()
    (tmp_path / "telegram" / "message.html.j2").write_text(
        "{{ incident.firing[0].labels.items(1, 2) }}"
    )
    parts, error = Renderer(tmp_path).render_or_fallback(
        "telegram", incident_for(["truncated-max-alerts-2"])
    )
    assert error is not None and error.startswith("template telegram/message.html.j2 failed:")
    assert parts["message"].startswith(
        "CRITICAL: DiskFull (#k2x7m, oncall)\n- Disk 97% full on db-0 component=storage"
    )


def test_an_override_directory_replaces_only_the_files_it_has(tmp_path: Path) -> None:
    (tmp_path / "slack").mkdir()
    (tmp_path / "slack" / "message.mrkdwn.j2").write_text(
        "{{ incident.title }} {{ '<b&>' }} <{{ incident.id }}>"
    )
    renderer = Renderer(tmp_path)
    view = incident_for(["firing-group-3-alerts"])
    assert renderer.render("slack", view) == {"message": "HighLatency &lt;b&amp;&gt; <k2x7m>"}
    assert renderer.render("telegram", view) == Renderer().render("telegram", view)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59, "59s"),
        (60, "1m"),
        (3599, "59m"),
        (3600, "1h"),
        (3660, "1h 1m"),
        (86400, "1d"),
        (90000, "1d 1h"),
        (-5, "0s"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(timedelta(seconds=seconds)) == text


def test_shipped_templates_have_every_part_each_channel_declares_and_compile() -> None:
    assert Renderer(ROOT / "templates").problems(template_parts()) == []


def test_a_part_a_channel_needs_without_a_template_is_named(tmp_path: Path) -> None:
    (tmp_path / "telegram").mkdir()
    (tmp_path / "telegram" / "message.html.j2").write_text("{{ incident.title }}")
    [problem] = Renderer(tmp_path).problems({"telegram": {"message", "footer"}})
    assert str(problem) == (
        f"{tmp_path}/telegram: no template for the part 'footer' (a telegram message is made of:"
        " footer, message; e.g. footer.txt.j2)"
    )


# ------------------------------------------------------------------ markup kept whole


@pytest.mark.parametrize(
    "html",
    [
        "<b>a\n\nb</b>\n" + "x" * 5000,
        "<i>" + "word " * 3000 + "</i>",
        '<a href="https://e.example/x">' + "link text " * 900 + "</a> tail",
        "<b><i><u>" + "🔥" * 3000 + "</u></i></b>",
        "<pre>" + "&lt;&amp;&gt;\n" * 3000 + "</pre>",
    ],
)
def test_split_html_makes_balanced_pieces_within_the_limit_and_loses_no_text(html: str) -> None:
    pieces = split_html(html, 1000)
    assert len(pieces) > 1
    for piece in pieces:
        assert html_problem(piece) == ""
        assert utf16_len(visible_text(piece)) <= 1000
    assert "".join(visible_text(p) for p in pieces) == visible_text(html)


def test_split_html_reopens_the_tags_open_at_a_cut() -> None:
    first, second = split_html("<b>bold <i>both\n\nitalic</i> bold</b>", 14)
    assert first == "<b>bold <i>both\n\n</i></b>"
    assert second == "<b><i>italic</i> bold</b>"


@pytest.mark.parametrize(
    ("html", "fixed"),
    [
        ("<p><b>x</p>", "<p><b>x</b></p>"),
        ("a</b>c", "ac"),
        ("<i>open", "<i>open</i>"),
        ("<!DOCTYPE html><p>a<br>b</p>", "<!DOCTYPE html><p>a<br>b</p>"),
        ("<style>a > b {}</style><p>x</p>", "<style>a > b {}</style><p>x</p>"),
    ],
)
def test_email_html_from_any_template_is_balanced(html: str, fixed: str) -> None:
    assert balanced_html(html) == fixed


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://wiki.example/runbooks/disk", True),
        ("HTTP://Grafana.example:3000/d/x?a=1&b=<2>", True),
        ("see wiki", False),
        ("/d/x", False),
        ("wiki.example/runbooks", False),
        ("javascript:alert(1)", False),
        ("ftp://files.example/x", False),
        ("https://", False),
        ("https://x.example/a b", False),
        ("https://x.example/\nb", False),
        ("https://x.example/" + "a" * 2982, True),
        ("https://x.example/" + "a" * 2983, False),
        ("http://[::1", False),
    ],
)
def test_only_absolute_http_urls_become_links(url: str, ok: bool) -> None:
    assert (http_url(url) == url) is ok
    assert ('<a href="' in html_link(url, "Runbook")) is ok
    assert slack_link(url, "Runbook").lower().startswith("<http") is (ok and len(url) <= 1400)


@pytest.mark.parametrize("kind", KINDS)
def test_every_fallback_is_escaped_for_its_channel(kind: str, tmp_path: Path) -> None:
    (tmp_path / kind).mkdir()
    for name in Renderer().parts(kind).values():
        (tmp_path / name).write_text("{{ 1 / 0 }}")
    view = incident_for(["truncated-max-alerts-2"])
    hostile = view.firing[0].model_copy(
        update={"annotations": {"summary": "<!channel> <@U123> <b>x & @alice_ops"}}
    )
    view = view.model_copy(update={"firing": [hostile]})
    parts, error = Renderer(tmp_path).render_or_fallback(kind, view)
    assert error is not None
    if kind == "slack":
        assert slack_mentions(parts["message"]) == [] and "&lt;!channel&gt;" in parts["message"]
    elif kind == "telegram":
        assert html_problem(parts["message"]) == "" and tg_mentions(parts["message"]) == []
    elif kind == "email":
        assert "&lt;b&gt;x &amp; @alice_ops" in parts["html"] and "<b>" not in parts["html"]
        assert "<b>x & @alice_ops" in parts["text"]  # plain text: as it is


@pytest.mark.parametrize("kind", ["telegram", "slack", "email"])
def test_golden_digest(kind: str) -> None:
    """A storm of the captured incidents (each case's last view, ids made distinct)."""
    config = parse_config(CONFIG)
    [(_, _, channel_config)] = [c for c in config.receivers[0].channels() if c[0] == kind]
    channel = channel_class(kind)(channel_config, Renderer())
    views = [
        incident_for(fixtures).model_copy(update={"id": f"k{n}x7m"})
        for n, fixtures in enumerate(CASES.values())
    ]
    [digest] = channel.render_digests(views)
    text = "".join(f"===== {part}\n{body}\n" for part, body in sorted(digest.parts.items()))
    path = GOLDEN / kind / "digest.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run make golden and review it"
    assert text == path.read_text()


@pytest.mark.parametrize(
    ("html", "sent"),
    [
        ("<code><b>x</b></code>", "<code>x</code>"),
        ('<a href="https://x.example"><code>x</code></a>', '<a href="https://x.example">x</a>'),
        ("<blockquote><blockquote>q</blockquote></blockquote>", "<blockquote>q</blockquote>"),
        (
            '<pre><code class="language-go">x</code></pre>',
            '<pre><code class="language-go">x</code></pre>',
        ),
        (
            '<b><i><a href="https://x.example">x</a></i></b>',
            '<b><i><a href="https://x.example">x</a></i></b>',
        ),
        (
            # a link that may not stand where it is shows its URL after its text
            '<a href="https://a.example"><a href="https://b.example">x</a>y</a>',
            '<a href="https://a.example">x (https://b.example)y</a>',
        ),
        (
            '<code><a href="https://x.example">Runbook</a></code>',
            "<code>Runbook (https://x.example)</code>",
        ),
    ],
)
def test_telegram_entities_are_nested_only_as_the_bot_api_allows(html: str, sent: str) -> None:
    assert (html_problem(html) == "") == (html == sent)  # the fake refuses what is changed
    assert split_html(html, 4096) == [sent] and html_problem(sent) == ""


@pytest.mark.parametrize(
    ("kind", "template"),
    [("telegram", "message.html.j2"), ("slack", "message.mrkdwn.j2"), ("email", "text.txt.j2")],
)
@pytest.mark.parametrize("body", ["", "  \n\n ", "{% if false %}x{% endif %}", "<b> </b><i></i>"])
def test_a_template_that_renders_no_text_falls_back(
    kind: str, template: str, body: str, tmp_path: Path
) -> None:
    (tmp_path / kind).mkdir()
    (tmp_path / kind / template).write_text(body)
    parts, error = Renderer(tmp_path).render_or_fallback(
        kind, incident_for(["firing-group-3-alerts"])
    )
    part = template.split(".")[0]
    if kind != "telegram" and "<b>" in body:  # mrkdwn, plain text: tags are text there
        assert error is None
    else:
        assert error is not None and "rendered no text" in error
        assert parts[part].startswith("WARNING: HighLatency (#k2x7m, oncall)")


@pytest.mark.parametrize("url", ["see wiki", "/d/x", "javascript:alert(1)", 'x" onclick="y'])
@pytest.mark.parametrize("kind", ["telegram", "email"])
def test_a_user_templates_link_to_a_non_http_url_shows_the_url_as_text(
    tmp_path: Path, kind: str, url: str
) -> None:
    """Issue 14 item 3 in user templates: `<a href="{{ … }}">Runbook</a>` with a value that is
    not an absolute http(s) URL is no link (Telegram drops it, a mail client opens nothing or
    runs it), so the value follows the link's text instead of being hidden behind it."""
    name = "message.html.j2" if kind == "telegram" else "html.html.j2"
    (tmp_path / kind).mkdir()
    (tmp_path / kind / name).write_text(
        '<p><a href="{{ incident.firing[0].annotations.runbook }}">Runbook</a> and'
        ' <a href="https://wiki.example/x">Wiki</a></p>'
    )
    first = incident_for(["firing-group-3-alerts"]).firing[0]
    view = incident_for(["firing-group-3-alerts"]).model_copy(
        update={"firing": [first.model_copy(update={"annotations": {"runbook": url}})]}
    )
    part = Renderer(tmp_path).render(kind, view)["message" if kind == "telegram" else "html"]
    shown = read_html(part, None)
    hrefs = [t.source for t in shown.tags if t.name == "a" and t.kind == "open"]
    assert hrefs == ['<a href="https://wiki.example/x">']
    assert f"Runbook ({url}) and Wiki" in shown.text


@pytest.mark.parametrize(
    ("html", "sent"),
    [
        ('<span class="tg-spoiler">s</span>', '<span class="tg-spoiler">s</span>'),
        ('<span class="highlight">s</span> t', "s t"),
        ("<span>s</span>", "s"),
        ('<tg-emoji emoji-id="5368324170671202286">🔥</tg-emoji>', None),
        ('<tg-emoji emoji-id="fire">🔥</tg-emoji>', "🔥"),
        ('<tg-emoji emoji-id="-5">🔥</tg-emoji>', "🔥"),
        ("<tg-emoji>🔥</tg-emoji>", "🔥"),
    ],
)
def test_telegram_tags_keep_only_the_attributes_telegram_requires(
    html: str, sent: str | None
) -> None:
    """The Bot API's HTML parser (TDLib's parse_html) refuses a <span> whose class is not
    "tg-spoiler" and a <tg-emoji> whose emoji-id is not a positive 64-bit integer: such a tag
    is dropped and its text kept, so a template using one is not sent as plain text instead."""
    sent = html if sent is None else sent
    assert (html_problem(html) == "") == (html == sent)  # the fake refuses what is changed
    assert split_html(html, 4096) == [sent] and html_problem(sent) == ""
