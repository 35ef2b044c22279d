"""Rendered notifications for captured payloads, compared with reviewed golden files.

`make golden` (UPDATE_GOLDEN=1) rewrites tests/golden/; review the diff like code.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from router.config import parse_config
from router.models import IncidentView, WebhookPayload
from router.pipeline import Pipeline, State
from router.render import Renderer, human_duration

from .fakes.telegram import html_problem
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


def test_shipped_templates_compile() -> None:
    Renderer(ROOT / "templates").check(list(KINDS))
