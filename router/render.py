"""Jinja2 templates per channel: environments, filters, and the rendered parts of a notification.

A channel's templates live in `templates/<kind>/`; each file is one part of the message, named by
the file name up to its first dot (`message.html.j2` -> part "message"). The second suffix picks
the escaping: `.html` escapes for HTML (Telegram, email), `.mrkdwn` escapes for Slack, `.txt`
leaves text as it is. A directory named in routes.yaml overrides files of the same name.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from html import escape as html_escape
from html.parser import HTMLParser
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from jinja2 import (
    ChainableUndefined,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    TemplateNotFound,
    TemplateSyntaxError,
    nodes,
)
from markupsafe import Markup

from router.errors import ConfigError, ConfigProblem, RenderError
from router.models import AlertView, IncidentView

# An installed wheel holds the templates as package data (router/templates/, see setup.py); a
# source checkout or an editable install reads the repository's top-level templates/.
PACKAGED_TEMPLATES = Path(__file__).resolve().parent / "templates"
REPOSITORY_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

SEVERITY_ICONS = {"critical": "🔴", "error": "🔴", "warning": "🟠", "info": "🔵"}
RESOLVED_ICON = "✅"
# Labels every alert has or that the heading already shows: not repeated in the body.
HEADLINE_LABELS = frozenset({"alertname", "severity"})
BODY_PARTS = frozenset({"message", "text"})  # a message's body: never sent empty
_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")  # at most one blank line in a row
_REFERENCES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def default_template_dir() -> Path:
    """The shipped templates: router/templates/ of an installed wheel, else the repository's.

    The wheel's copy is looked for first, so that a `templates` folder next to the installed
    package (another distribution's, in site-packages) is never taken for ours.
    """
    return PACKAGED_TEMPLATES if PACKAGED_TEMPLATES.is_dir() else REPOSITORY_TEMPLATES


class SlackText(str):
    """Text already in Slack mrkdwn (a link, say): passed through without escaping."""

    __slots__ = ()


def slack_escape(value: Any) -> str:
    """A value as literal Slack mrkdwn text: & < > escaped, so no `<!channel>` or link from data."""
    if isinstance(value, SlackText):
        return value
    if value is None:
        return ""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


LINK_MAX = 3000  # characters of a URL in a link or button (Slack's button url limit)
_URL_SPACE = re.compile(r"[\s\x00-\x1f\x7f]")


def http_url(url: str, max_len: int = LINK_MAX) -> str:
    """`url` if it is an absolute http(s) URL with a host, no spaces or control characters and
    at most `max_len` characters, else "" (then it is shown as text, not put in a link)."""
    if not url or len(url) > max_len or _URL_SPACE.search(url):
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return url if parts.scheme.lower() in ("http", "https") and parts.hostname else ""


SLACK_LINK_MAX = 1400  # a <url|text> link in text: half a section, so a section can hold it


def slack_link(url: str, text: str) -> SlackText:
    """`<url|text>`, or "text: url" as plain text when url is not an absolute http(s) URL."""
    if not url:
        return SlackText(slack_escape(text))
    if not http_url(url, SLACK_LINK_MAX):
        return SlackText(f"{slack_escape(text)}: {slack_escape(url)}")
    return SlackText(
        f"<{slack_escape(url).replace('|', '%7C')}|{slack_escape(text).replace('|', '¦')}>"
    )


def html_link(url: str, text: str) -> Markup:
    """<a href>, or "text: url" as escaped text when url is not an absolute http(s) URL."""
    if not url:
        return Markup.escape(text)
    if not http_url(url):
        return Markup("{}: {}").format(text, url)
    return Markup('<a href="{}">{}</a>').format(url, text)


_MENTION = re.compile(r"@(?=\w)")
WORD_JOINER = "\u2060"


def no_mentions(text: str) -> str:
    """Text in which Telegram finds no @username mention (a word joiner follows each @)."""
    return _MENTION.sub("@" + WORD_JOINER, text)


def _telegram_finalize(value: Any) -> Any:
    """Values in Telegram templates: data never mentions anyone; Markup passes as it is."""
    if isinstance(value, Markup) or value is None:
        return "" if value is None else value
    return no_mentions(str(value))


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
    """A time as `2026-11-23 07:00 UTC` ("" for None)."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def label_pairs(labels: Mapping[str, str], skip: Any = ()) -> list[tuple[str, str]]:
    """(name, value) of the labels, sorted, without `skip` and those the heading shows."""
    skipped = set(skip) | HEADLINE_LABELS
    return [(k, v) for k, v in sorted(labels.items()) if k not in skipped]


def html_labels(pairs: list[tuple[str, str]]) -> Markup:
    """Label pairs as HTML: name=<code>value</code>, escaped, space-separated."""
    return Markup(" ").join(Markup("{}=<code>{}</code>").format(k, v) for k, v in pairs)


def mrkdwn_labels(pairs: list[tuple[str, str]]) -> SlackText:
    """Label pairs as Slack mrkdwn: name=`value`, escaped, space-separated."""
    return SlackText(
        " ".join(f"{slack_escape(k)}=`{_no_backtick(slack_escape(v))}`" for k, v in pairs)
    )


def _no_backtick(text: str) -> str:
    return text.replace("`", "'")


def html_links(links: list[tuple[str, str]]) -> Markup:
    """(text, url) pairs as HTML links joined by " · " (see html_link)."""
    return Markup(" · ").join(html_link(url, text) for text, url in links)


def mrkdwn_links(links: list[tuple[str, str]]) -> SlackText:
    """(text, url) pairs as Slack links joined by " · " (see slack_link)."""
    return SlackText(" · ".join(slack_link(url, text) for text, url in links))


def _telegram_link(url: str, text: str) -> Markup:
    return html_link(url if http_url(url) else no_mentions(url), no_mentions(text))


def _telegram_links(links: list[tuple[str, str]]) -> Markup:
    return Markup(" · ").join(_telegram_link(url, text) for text, url in links)


def _telegram_labels(pairs: list[tuple[str, str]]) -> Markup:
    return html_labels([(no_mentions(k), no_mentions(v)) for k, v in pairs])


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
    """The heading's icon: by severity while firing, a check mark once resolved."""
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
            "telegram": Environment(autoescape=True, finalize=_telegram_finalize, **common),
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
                shorten=shorten,
            )
            env.globals.update(
                html_link=html_link,
                slack_link=slack_link,
                severity_icon=severity_icon,
                alert_links=alert_links,
            )
        self._envs["telegram"].filters.update(
            html_labels=_telegram_labels, html_links=_telegram_links
        )
        self._envs["telegram"].globals.update(html_link=_telegram_link)

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

    def check(self, required: Mapping[str, Collection[str]]) -> None:
        """Check every template of the folders in `required` now ("telegram",
        "telegram/digest" -> the parts each must have), so that a broken one stops the start,
        not a 3 a.m. page; raises ConfigError listing each problem that `problems` finds."""
        problems = self.problems(required)
        if problems:
            raise ConfigError(problems)

    def problems(self, required: Mapping[str, Collection[str]]) -> list[ConfigProblem]:
        """What is wrong with the templates of each folder in `required` (its keys), naming
        the file and line: a folder without templates, a required part with no template, a
        template that does not compile (syntax, unknown filter or test), and an include,
        import or extends of a template that is in none of the folders searched."""
        problems = []
        for kind, parts in required.items():
            found = self.parts(kind)
            if not found:
                problems.append(
                    ConfigProblem(str(self.dirs[0]), None, kind, "no templates for this channel")
                )
                continue
            for part in sorted(set(parts) - set(found)):
                problems.append(
                    ConfigProblem(
                        str(self.dirs[0] / kind),
                        None,
                        "",
                        f"no template for the part {part!r} (a {kind} message is made of: "
                        f"{', '.join(sorted(parts))}; e.g. {part}.txt.j2)",
                    )
                )
            for name in found.values():
                problems += self._template_problems(name)
        return problems

    def _template_problems(self, name: str) -> list[ConfigProblem]:
        env = self._env_for(name)
        try:
            env.get_template(name)
        except TemplateSyntaxError as exc:  # TemplateAssertionError too: an unknown filter
            return [
                ConfigProblem(exc.filename or name, exc.lineno, "", exc.message or "syntax error")
            ]
        assert env.loader is not None
        source, filename, _ = env.loader.get_source(env, name)
        problems = []
        for node in env.parse(source, name, filename).find_all(_REFERENCES):
            target = getattr(node, "template", None)  # Include, Import...: all have it
            if not isinstance(target, nodes.Const) or not isinstance(target.value, str):
                continue  # a name computed at render time: cannot be checked now
            if isinstance(node, nodes.Include) and node.ignore_missing:
                continue
            try:
                env.loader.get_source(env, target.value)
            except TemplateNotFound:
                statement = type(node).__name__.lower().replace("fromimport", "from")
                problems.append(
                    ConfigProblem(
                        filename or name,
                        node.lineno,
                        "",
                        f"{statement} {target.value!r}: no such template in "
                        f"{' or '.join(str(d) for d in self.dirs)}",
                    )
                )
        return problems

    def _env_for(self, name: str) -> Environment:
        mode = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else "txt"
        if mode == "html" and name.startswith("telegram/"):
            mode = "telegram"
        return self._envs.get(mode, self._envs["txt"])

    def render(self, kind: str, incident: IncidentView, **extra: Any) -> dict[str, str]:
        """Every part of the message; raises RenderError if a template fails, or if a message
        body (part "message" or "text") has no visible text: a service refuses an empty one."""
        context = {"incident": incident, "now": incident.notified_at, **extra}
        out = {}
        for part, name in self.parts(kind).items():
            try:
                env = self._env_for(name)
                text = _BLANK_RUNS.sub("\n\n", env.get_template(name).render(context)).strip()
                out[part] = balanced_html(text) if env is self._envs["html"] else text
            except Exception as exc:  # a user template can raise anything; none may lose a page
                raise RenderError(f"template {name} failed: {exc}") from exc
            shown = read_html(text, None).text if env is self._envs["telegram"] else text
            if part in BODY_PARTS and not shown.strip():
                raise RenderError(f"template {name} rendered no text")
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
            return self.fallback(kind, incident, **extra), str(exc)

    def fallback(self, kind: str, incident: IncidentView, **extra: Any) -> dict[str, str]:
        """Every part of the built-in plain message, escaped for each part's markup: what is sent
        when a template fails, or when the service refused the rendered message for good."""
        incidents = extra.get("incidents")
        text = digest_fallback_text(incidents) if incidents else fallback_text(incident)
        parts = {}
        for part, name in self.parts(kind).items():
            env = self._env_for(name)
            if env is self._envs["telegram"]:
                parts[part] = str(Markup.escape(no_mentions(text)))
            elif env is self._envs["html"]:
                parts[part] = str(Markup.escape(text))
            elif env is self._envs["mrkdwn"]:
                parts[part] = slack_escape(text)
            else:
                parts[part] = text
        return parts


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


def digest_fallback_text(incidents: list[IncidentView]) -> str:
    """A digest sent when its template fails: one line per incident, with its /ack."""
    lines = [f"{len(incidents)} incident(s) at once:"]
    for i in incidents:
        state = "RESOLVED" if i.status == "resolved" else (i.severity.upper() or "FIRING")
        labels = " ".join(f"{k}={shorten(v)}" for k, v in label_pairs(i.group_labels))
        alerts = len(i.firing) or len(i.resolved)
        ack = f", /ack {i.id}" if i.status == "firing" and not i.acked_by else ""
        lines.append(f"- {state}: {shorten(i.title)} {labels} ({alerts} alert(s), #{i.id}{ack})")
    lines.append("(rendered without its template, which failed: see the router's log)")
    return "\n".join(lines)


def shorten(value: Any, max_len: int = 80) -> str:
    """A value of at most `max_len` characters, its middle replaced by … if longer."""
    text = str(value)
    if len(text) <= max_len:
        return text
    half = (max_len - 1) // 2
    return f"{text[:half]}…{text[len(text) - (max_len - 1 - half) :]}"


def utf16_len(text: str) -> int:
    """Length as Telegram and Slack count it: UTF-16 code units (an emoji is 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def utf16_prefix(text: str) -> list[int]:
    """units[i]: UTF-16 code units of text[:i]."""
    return [0, *accumulate(2 if ord(ch) > 0xFFFF else 1 for ch in text)]


def _best_cut(text: str, start: int, hi: int, forbidden: Any = None) -> int:
    """A cut in text[start:hi] at the last blank line, line end or space of its second half, or
    else at hi. `forbidden(i)` says a cut before text[i] would break something (a Slack link):
    then the cut moves before it."""
    lo = start + (hi - start) // 2
    for sep in ("\n\n", "\n", " "):
        at = text.rfind(sep, lo, hi)
        while at >= 0 and forbidden is not None and forbidden(at + len(sep)):
            at = text.rfind(sep, lo, at)
        if at >= 0:
            return at + len(sep)
    cut = hi
    while cut > start + 1 and forbidden is not None and forbidden(cut):
        cut -= 1
    return cut


def _cuts(text: str, limit: int, forbidden: Any = None) -> list[int]:
    """Where to cut `text` so that each piece has at most `limit` UTF-16 units (see _best_cut)."""
    units = utf16_prefix(text)
    cuts: list[int] = []
    start = 0
    while units[-1] - units[start] > limit:
        hi = max(start + 1, bisect_right(units, units[start] + limit) - 1)
        start = _best_cut(text, start, hi, forbidden)
        cuts.append(start)
    return cuts


# ----------------------------------------------------------------- HTML: balanced, split, fitted

# Telegram's HTML: these tags, with these attributes (core.telegram.org/bots/api#html-style).
TELEGRAM_TAGS: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        ("b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "tg-spoiler", "pre"),
        frozenset(),
    ),
    "a": frozenset({"href"}),
    "code": frozenset({"class"}),
    "span": frozenset({"class"}),
    "blockquote": frozenset({"expandable"}),
    "tg-emoji": frozenset({"emoji-id"}),
}
# Entities that may contain, and be inside, any other but pre and code (Bot API, "Formatting
# options"); the others may not contain each other, except <pre><code class="language-…">.
TELEGRAM_FORMATTING = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "tg-spoiler", "span"}
)


def telegram_may_nest(tag: str, open_tags: list[str]) -> bool:
    """Whether Telegram takes a `tag` opened inside `open_tags` (outermost first)."""
    if tag == "code" and open_tags[-1:] == ["pre"]:
        return True
    if any(t in ("pre", "code") for t in open_tags):
        return False
    return tag in TELEGRAM_FORMATTING or all(t in TELEGRAM_FORMATTING for t in open_tags)


VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


class _Tag(NamedTuple):
    pos: int  # offset in the visible text where the tag stands
    kind: str  # "open", "close" or "void"
    name: str
    source: str  # the start tag as sent ("" for "close")


class MarkedText(NamedTuple):
    """HTML read into its visible text and its tags, balanced: every open has its close."""

    text: str
    tags: list[_Tag]


class _HtmlReader(HTMLParser):
    """Reads HTML as a browser would, keeping only `allowed` tags (all if None), and balances it:
    a stray end tag is dropped, one that closes an outer tag closes the inner ones first, and
    tags still open at the end are closed there. Comments and processing instructions go."""

    def __init__(self, allowed: Mapping[str, frozenset[str]] | None) -> None:
        super().__init__(convert_charrefs=True)
        self.allowed = allowed
        self.chunks: list[str] = []
        self.pos = 0
        self.tags: list[_Tag] = []
        self.stack: list[str] = []
        self.repaired = False  # a tag was dropped, closed early or closed at the end
        # Links dropped with their href (not http(s), or not allowed where they stand): the
        # href, where the link's text starts, and the depth of open tags then; the href is
        # shown after that text, at the link's end tag.
        self.dropped_links: list[tuple[str, int, int]] = []

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)
        self.pos += len(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        source = self._start(tag, attrs)
        if source is None:
            return
        if tag in VOID_TAGS:
            self.tags.append(_Tag(self.pos, "void", tag, source))
            return
        self.tags.append(_Tag(self.pos, "open", tag, source))
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        source = self._start(tag, attrs)
        if source is not None:
            self.tags.append(_Tag(self.pos, "void", tag, source))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self.dropped_links and "a" not in self.stack[self.dropped_links[-1][2] :]:
            self._show_dropped_href()  # the innermost open link is a dropped one: it ends here
            return
        if tag not in self.stack:
            self.repaired = self.repaired or tag not in VOID_TAGS
            return
        while self.stack:
            name = self.stack.pop()
            self.tags.append(_Tag(self.pos, "close", name, ""))
            if name == tag:
                return
            self.repaired = True

    def handle_decl(self, decl: str) -> None:
        if self.allowed is None:
            self.tags.append(_Tag(self.pos, "void", "!", f"<!{decl}>"))

    def _start(self, tag: str, attrs: list[tuple[str, str | None]]) -> str | None:
        """The start tag as it will be sent, or None to drop it (its text stays)."""
        if tag == "a":
            href = (dict(attrs).get("href") or "").strip()
            if href and not (
                (http_url(href) or href.startswith(("tg://", "mailto:")))
                and (self.allowed is None or telegram_may_nest(tag, self.stack))
            ):
                # No link, as item 3 of issue 14 asks: its text, then the href as text.
                self.repaired = True
                self.dropped_links.append((href, len(self.chunks), len(self.stack)))
                return None
        if self.allowed is None:
            kept = attrs
        else:
            self.repaired = True  # conservatively: the allowed set may have dropped something
            if tag not in self.allowed or (tag in VOID_TAGS and tag != "br"):
                return None
            if tag == "br":  # not Telegram HTML: a line break is a newline there
                self.handle_data("\n")
                return None
            if not telegram_may_nest(tag, self.stack):
                return None
            kept = [(k, v) for k, v in attrs if k in self.allowed[tag]]
            if not _telegram_attributes_valid(tag, dict(kept)):
                return None
        rendered = "".join(
            f" {k}" if v is None else f' {k}="{html_escape(v, quote=True)}"' for k, v in kept
        )
        return f"<{tag}{rendered}>"

    def _show_dropped_href(self) -> None:
        href, start, _ = self.dropped_links.pop()
        if "".join(self.chunks[start:]).strip() != href:
            self.handle_data(f" ({href})")

    def result(self) -> MarkedText:
        self.close()
        while self.dropped_links:  # a dropped link never closed: its href at the end
            self._show_dropped_href()
        self.repaired = self.repaired or bool(self.stack)
        while self.stack:
            self.tags.append(_Tag(self.pos, "close", self.stack.pop(), ""))
        return MarkedText("".join(self.chunks), self.tags)


def _telegram_attributes_valid(tag: str, attrs: Mapping[str, str | None]) -> bool:
    """False where the Bot API's HTML parser (TDLib parse_html) refuses the tag for its
    attributes: <a> without href, <span> whose class is not "tg-spoiler", <tg-emoji> whose
    emoji-id is not a positive 64-bit integer ("Invalid custom emoji identifier specified")."""
    if tag == "a":
        return bool(attrs.get("href"))
    if tag == "span":
        return attrs.get("class") == "tg-spoiler"
    if tag == "tg-emoji":
        emoji_id = attrs.get("emoji-id") or ""
        return emoji_id.isascii() and emoji_id.isdigit() and 0 < int(emoji_id) < 2**63
    return True


def read_html(
    text: str, allowed: Mapping[str, frozenset[str]] | None = TELEGRAM_TAGS
) -> MarkedText:
    """HTML as visible text plus balanced tags; `allowed` maps tag -> kept attributes."""
    return _read(text, allowed)[0]


def _read(text: str, allowed: Mapping[str, frozenset[str]] | None) -> tuple[MarkedText, bool]:
    reader = _HtmlReader(allowed)
    reader.feed(text)
    return reader.result(), reader.repaired


def html_pieces(marked: MarkedText, cuts: list[int]) -> list[str]:
    """The HTML of marked.text cut at `cuts` (sorted offsets in the visible text): tags open at a
    cut are closed at the end of one piece and opened again at the start of the next."""
    text, tags = marked
    bounds = [0, *cuts, len(text)]
    stack: list[_Tag] = []
    pieces: list[str] = []
    i = 0
    for k in range(len(bounds) - 1):
        start, end, last = bounds[k], bounds[k + 1], k == len(bounds) - 2
        out = [t.source for t in stack]
        pos = start
        while i < len(tags):
            tag = tags[i]
            if tag.pos > end or (tag.pos == end and tag.kind != "close" and not last):
                break
            out.append(html_escape(text[pos : tag.pos], quote=False))
            pos = tag.pos
            if tag.kind == "open":
                stack.append(tag)
                out.append(tag.source)
            elif tag.kind == "close":
                stack.pop()
                out.append(f"</{tag.name}>")
            else:
                out.append(tag.source)
            i += 1
        out.append(html_escape(text[pos:end], quote=False))
        out.extend(f"</{t.name}>" for t in reversed(stack))
        pieces.append("".join(out))
    return pieces


def balanced_html(text: str, allowed: Mapping[str, frozenset[str]] | None = None) -> str:
    """`text` with unbalanced or stray tags (and, if `allowed` is given, unknown ones) repaired;
    well-formed HTML is returned as it is (CSS inside <style> stays untouched)."""
    marked, repaired = _read(text, allowed)
    return html_pieces(marked, [])[0] if repaired else text


def split_html(
    text: str, limit: int, allowed: Mapping[str, frozenset[str]] = TELEGRAM_TAGS
) -> list[str]:
    """Telegram HTML in pieces of at most `limit` visible UTF-16 units each, every piece balanced
    and made only of `allowed` tags; cut at a blank line, a line end or a space where one is."""
    marked = read_html(text, allowed)
    return html_pieces(marked, _cuts(marked.text, limit))


def fit_html(text: str, limit: int, allowed: Mapping[str, frozenset[str]] = TELEGRAM_TAGS) -> str:
    """Telegram HTML in one message of at most `limit` visible UTF-16 units, balanced.

    Whole paragraphs are kept from the top while they fit, with the last paragraph (the id and
    /ack) always kept; a line says how many paragraphs are not shown. A paragraph too long on its
    own is cut at a line end or space. Empty visible text becomes a one-line plain notice.
    """
    marked = read_html(text, allowed)
    visible = marked.text
    if not visible.strip():
        return "(empty message: the template rendered no text)"
    if utf16_len(visible) <= limit:
        return html_pieces(marked, [])[0]
    foot_at = visible.rfind("\n\n")
    foot = visible[foot_at:] if foot_at > 0 and utf16_len(visible[foot_at:]) < limit // 4 else ""
    body_end = len(visible) - len(foot)
    note = "\n\n… {} more paragraph(s) not shown: the message is limited to {} characters"
    room = limit - utf16_len(foot) - utf16_len(note.format(body_end, limit))
    cut = _cuts(visible[:body_end], max(room, 1))[0]
    dropped = visible.count("\n\n", cut, body_end) + 1
    head = html_pieces(marked, [cut, body_end])
    tail = [head[2]] if foot else []
    return "".join([head[0].rstrip("\n"), note.format(dropped, limit), *tail])


# ----------------------------------------------------------------- Slack mrkdwn

_SLACK_ANGLE = re.compile(r"<[^<>]{1,1500}>")  # longer ones are shown as text


def sanitize_mrkdwn(text: str) -> str:
    """Slack mrkdwn with every `<…>` complete: a `<` outside one is escaped, newlines inside one
    become spaces (Slack reads `<url|text>`, `<!here>`, `<@U…>` only whole). A `>` outside one
    stays: at a line's start it is a quote."""
    out: list[str] = []
    pos = 0
    for m in _SLACK_ANGLE.finditer(text):
        out.append(text[pos : m.start()].replace("<", "&lt;"))
        out.append(m.group().replace("\n", " "))
        pos = m.end()
    out.append(text[pos:].replace("<", "&lt;"))
    return "".join(out)


def _mrkdwn_forbidden(text: str) -> Any:
    """A predicate: True for an offset inside a `<…>` or an `&…;` escape of sanitized mrkdwn."""
    inside = bytearray(len(text) + 1)
    for pattern in (_SLACK_ANGLE, _SLACK_ENTITY):
        for m in pattern.finditer(text):
            inside[m.start() + 1 : m.end()] = b"\x01" * (m.end() - m.start() - 1)
    return lambda i: bool(inside[i])


_SLACK_ENTITY = re.compile(r"&(?:amp|lt|gt);")


def split_mrkdwn(text: str, limit: int) -> list[str]:
    """Sanitized mrkdwn in pieces of at most `limit` characters, never cut inside `<…>` or `&…;`."""
    text = sanitize_mrkdwn(text)
    cuts = _cuts(text, limit, _mrkdwn_forbidden(text)) if len(text) > limit else []
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in pairwise(bounds)]
