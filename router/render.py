"""Jinja2 templates per channel: environments, filters, and the rendered parts of a notification.

A channel's templates live in `templates/<kind>/`; each file is one part of the message, named by
the file name up to its first dot (`message.html.j2` -> part "message"). The second suffix picks
the escaping: `.html` escapes for HTML (Telegram, email), `.mrkdwn` escapes for Slack, `.txt`
leaves text as it is. A directory named in routes.yaml overrides files of the same name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from html import unescape as html_unescape
from pathlib import Path
from typing import Any

from jinja2 import (
    ChainableUndefined,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    TemplateSyntaxError,
)
from markupsafe import Markup

from router.errors import ConfigError, ConfigProblem, RenderError
from router.models import AlertView, IncidentView

DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PACKAGED_TEMPLATES = Path(__file__).resolve().parent / "templates"

SEVERITY_ICONS = {"critical": "🔴", "error": "🔴", "warning": "🟠", "info": "🔵"}
RESOLVED_ICON = "✅"
# Labels every alert has or that the heading already shows: not repeated in the body.
HEADLINE_LABELS = frozenset({"alertname", "severity"})
_TAGS = re.compile(r"<[^>]*>")
_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")  # at most one blank line in a row


def default_template_dir() -> Path:
    """The shipped templates: the repository's templates/ or the copy inside an installed wheel."""
    return DEFAULT_TEMPLATES if DEFAULT_TEMPLATES.is_dir() else PACKAGED_TEMPLATES


class SlackText(str):
    """Text already in Slack mrkdwn (a link, say): passed through without escaping."""

    __slots__ = ()


def slack_escape(value: Any) -> str:
    if isinstance(value, SlackText):
        return value
    if value is None:
        return ""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_link(url: str, text: str) -> SlackText:
    if not url:
        return SlackText(slack_escape(text))
    return SlackText(
        f"<{slack_escape(url).replace('|', '%7C')}|{slack_escape(text).replace('|', '¦')}>"
    )


def html_link(url: str, text: str) -> Markup:
    return Markup('<a href="{}">{}</a>').format(url, text) if url else Markup.escape(text)


def human_duration(delta: timedelta) -> str:
    """12s, 5m, 3h 5m, 2d 4h: short enough for a phone line."""
    s = max(0, int(delta.total_seconds()))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h {m}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d {h}h" if h else f"{d}d"


def clock(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def label_pairs(labels: Mapping[str, str], skip: Any = ()) -> list[tuple[str, str]]:
    skipped = set(skip) | HEADLINE_LABELS
    return [(k, v) for k, v in sorted(labels.items()) if k not in skipped]


def html_labels(pairs: list[tuple[str, str]]) -> Markup:
    return Markup(" ").join(Markup("{}=<code>{}</code>").format(k, v) for k, v in pairs)


def mrkdwn_labels(pairs: list[tuple[str, str]]) -> SlackText:
    return SlackText(
        " ".join(f"{slack_escape(k)}=`{_no_backtick(slack_escape(v))}`" for k, v in pairs)
    )


def _no_backtick(text: str) -> str:
    return text.replace("`", "'")


def html_links(links: list[tuple[str, str]]) -> Markup:
    return Markup(" · ").join(html_link(url, text) for text, url in links)


def mrkdwn_links(links: list[tuple[str, str]]) -> SlackText:
    return SlackText(" · ".join(slack_link(url, text) for text, url in links))


def alert_links(alert: AlertView) -> list[tuple[str, str]]:
    """(text, url) of each link the alert has, in the order people reach for them."""
    links = [
        ("Runbook", alert.runbook_url),
        ("Dashboard", alert.dashboard_url),
        ("Source", alert.generator_url),
        ("Silence", alert.silence_url),
    ]
    return [(text, url) for text, url in links if url]


def severity_icon(incident: IncidentView) -> str:
    if incident.status == "resolved":
        return RESOLVED_ICON
    return SEVERITY_ICONS.get(incident.severity.lower(), "⚪")


class Renderer:
    """Renders an IncidentView with the templates of one channel kind."""

    def __init__(self, override_dir: Path | None = None) -> None:
        dirs = [override_dir] if override_dir is not None else []
        self.dirs = [*dirs, default_template_dir()]
        self._parts: dict[str, dict[str, str]] = {}
        loader = ChoiceLoader([FileSystemLoader(str(d)) for d in self.dirs])
        common: dict[str, Any] = {
            "loader": loader,
            "undefined": ChainableUndefined,  # a missing annotation renders empty
            "trim_blocks": True,
            "lstrip_blocks": True,
            "keep_trailing_newline": False,
            # Templates are read once: a reload builds a new Renderer, so no stat per message.
            "auto_reload": False,
        }
        self._envs = {
            "html": Environment(autoescape=True, **common),
            "mrkdwn": Environment(autoescape=False, finalize=slack_escape, **common),
            "txt": Environment(autoescape=False, **common),
        }
        for env in self._envs.values():
            env.filters.update(
                duration=human_duration,
                clock=clock,
                label_pairs=label_pairs,
                html_labels=html_labels,
                mrkdwn_labels=mrkdwn_labels,
                html_links=html_links,
                mrkdwn_links=mrkdwn_links,
            )
            env.globals.update(
                html_link=html_link,
                slack_link=slack_link,
                severity_icon=severity_icon,
                alert_links=alert_links,
            )

    def parts(self, kind: str) -> dict[str, str]:
        """Part name -> template file name, for one channel kind (looked up once per kind)."""
        cached = self._parts.get(kind)
        if cached is not None:
            return cached
        found: dict[str, str] = {}
        for d in reversed(self.dirs):
            folder = d / kind
            if folder.is_dir():
                for f in sorted(folder.glob("*.j2")):
                    found[f.name.split(".", 1)[0]] = f"{kind}/{f.name}"
        self._parts[kind] = found
        return found

    def check(self, kinds: list[str]) -> None:
        """Compile every template now, so a broken one stops the start, not a 3 a.m. page."""
        problems = []
        for kind in kinds:
            if not self.parts(kind):
                problems.append(
                    ConfigProblem(str(self.dirs[0]), None, kind, "no templates for this channel")
                )
            for name in self.parts(kind).values():
                try:
                    self._env_for(name).get_template(name)
                except TemplateSyntaxError as exc:
                    problems.append(
                        ConfigProblem(
                            exc.filename or name, exc.lineno, "", exc.message or "syntax error"
                        )
                    )
        if problems:
            raise ConfigError(problems)

    def _env_for(self, name: str) -> Environment:
        mode = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else "txt"
        return self._envs.get(mode, self._envs["txt"])

    def render(self, kind: str, incident: IncidentView, **extra: Any) -> dict[str, str]:
        """Every part of the message; raises RenderError if a template fails."""
        context = {"incident": incident, "now": incident.notified_at, **extra}
        out = {}
        for part, name in self.parts(kind).items():
            try:
                text = self._env_for(name).get_template(name).render(context)
                out[part] = _BLANK_RUNS.sub("\n\n", text).strip()
            except Exception as exc:  # a user template can raise anything; none may lose a page
                raise RenderError(f"template {name} failed: {exc}") from exc
        return out

    def render_or_fallback(
        self, kind: str, incident: IncidentView, **extra: Any
    ) -> tuple[dict[str, str], str | None]:
        """Like render, but a failing template yields a plain built-in message, never nothing.

        Returns the parts and the template error, if there was one, for the log.
        """
        try:
            return self.render(kind, incident, **extra), None
        except RenderError as exc:
            text = fallback_text(incident)
            parts = {}
            for part, name in self.parts(kind).items():
                mode = self._env_for(name)
                parts[part] = str(Markup.escape(text)) if mode is self._envs["html"] else text
            return parts, str(exc)


def fallback_text(incident: IncidentView) -> str:
    """The message sent when a template fails: plain, short, with what on-call needs."""
    status = (
        "RESOLVED" if incident.status == "resolved" else (incident.severity.upper() or "FIRING")
    )
    lines = [f"{status}: {incident.title} (#{incident.id}, {incident.receiver})"]
    for alert in incident.firing[:20]:
        summary = alert.annotations.get("summary") or alert.labels.get("alertname", "")
        lines.append(f"- {summary} {' '.join(f'{k}={v}' for k, v in label_pairs(alert.labels))}")
    if incident.resolved:
        lines.append(f"resolved: {len(incident.resolved)} alert(s)")
    lines.append("(rendered without its template, which failed: see the router's log)")
    return "\n".join(lines)


def utf16_len(text: str) -> int:
    """Length as Telegram and Slack count it: UTF-16 code units (an emoji is 2)."""
    return len(text.encode("utf-16-le")) // 2


def fit_blocks(text: str, limit: int, *, html: bool, measure: Any = utf16_len) -> str:
    """Fit `text` into `limit` by dropping whole blocks (paragraphs), never cutting markup.

    The first block (the heading) and the last (id and /ack) are always kept; alert blocks are
    kept in order while they fit, and a line says how many were left out. Only if heading and
    footer alone do not fit is the text cut, as plain text with its markup removed.
    """
    if measure(text) <= limit:
        return text
    blocks = text.split("\n\n")
    head, body, foot = blocks[0], blocks[1:-1], blocks[-1] if len(blocks) > 1 else ""

    def compose(kept: list[str], dropped: int) -> str:
        note = (
            [f"… {dropped} more not shown here (message too long): see the other links"]
            if dropped
            else []
        )
        return "\n\n".join(p for p in [head, *kept, *note, foot] if p)

    kept: list[str] = []
    for i, block in enumerate(body):
        if measure(compose([*kept, block], len(body) - i - 1)) > limit:
            break
        kept.append(block)
    fitted = compose(kept, len(body) - len(kept))
    if measure(fitted) <= limit:
        return fitted
    plain = _TAGS.sub("", fitted)
    if html:
        plain = html_unescape(plain)
    cut = plain
    while True:
        out = str(Markup.escape(cut)) if html else cut
        if measure(out) + 2 <= limit:
            return out + (" …" if cut != plain else "")
        cut = cut[: max(0, len(cut) - max(16, (measure(out) - limit) + 2))]
