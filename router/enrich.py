"""Runbook, dashboard and silence links for an alert, from the routes.yaml catalogue."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jinja2 import Template, nodes
from jinja2.exceptions import TemplateError

from router.config import TEMPLATE_STRINGS, RunbookConfig
from router.matchers import Matcher, all_match


@dataclass(frozen=True)
class Links:
    """An alert's links, as the catalogue renders them or the alert annotates them; "" if none."""

    runbook_url: str = ""
    dashboard_url: str = ""
    silence_url: str = ""


@dataclass(frozen=True, eq=False)  # hashed by identity: a cache key
class _Link:
    """One catalogue URL template and the label/annotation values its output depends on."""

    template: Template
    reads: tuple[tuple[str, str], ...] | None  # (("labels", "alertname"), ...); None: unknown

    @classmethod
    def compile(cls, source: str) -> _Link:
        """Compile `source` in the sandbox and find what it reads."""
        return cls(TEMPLATE_STRINGS.from_string(source), _reads(source))


@dataclass(frozen=True)
class _Entry:
    matchers: tuple[Matcher, ...]
    runbook: _Link | None
    dashboard: _Link | None


_MAPPINGS = ("labels", "annotations")
_MISSING = object()  # a label the template reads that the alert lacks (Undefined, not "")


def _reads(source: str) -> tuple[tuple[str, str], ...] | None:
    """The (mapping, key) lookups a template's output depends on, or None if it may depend on
    more: a whole mapping, a method of it, another variable or global, the random filter."""
    ast = TEMPLATE_STRINGS.parse(source)
    names = list(ast.find_all(nodes.Name))
    if any(n.name not in _MAPPINGS for n in names):  # lipsum(), a {% set %} or loop variable
        return None
    if any(f.name == "random" for f in ast.find_all(nodes.Filter)):
        return None
    reads: list[tuple[str, str]] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name in _MAPPINGS):
            continue
        key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if not isinstance(key, str) or hasattr(dict, key):  # labels.get, labels.items, ...
            return None
        reads.append((target.name, key))
    return tuple(dict.fromkeys(reads)) if len(names) == len(reads) else None


def silence_url(external_url: str, labels: Mapping[str, str]) -> str:
    r"""Alertmanager UI link to a new silence prefilled with matchers that select the alert.

    The UI parses ``filter`` as ``{name="value",...}`` (ui/app/src/Utils/Filter.elm): the
    0.25-0.31 UIs take what is between the quotes as is, without unescaping, while later ones
    JSON-decode it and refuse raw control characters. A value is written so both read the same:
    one without ``\``, ``"`` or a control character is an equality matcher; any other becomes
    a regex matcher (``=~``, anchored by Alertmanager) in which such a character is a small
    class that holds it, so the silence selects the alert and few others (see `label_regex`).
    Labels whose name the UIs cannot parse (not ``[A-Za-z_][A-Za-z0-9_]*``) are left out; ""
    without any label.
    """
    if not external_url:
        return ""
    # Percent-encoding goes character by character: each matcher is encoded once and cached.
    matchers = [m for item in sorted(labels.items()) if (m := _encoded_matcher(*item))]
    if not matchers:
        return ""
    return f"{external_url.rstrip('/')}/#/silences/new?filter=%7B{'%2C'.join(matchers)}%7D"


@functools.lru_cache(maxsize=1 << 16)
def _encoded_matcher(name: str, value: str) -> str:
    """One label's matcher in the filter, percent-encoded; "" for a name the UIs cannot parse."""
    if not _LABEL_NAME.fullmatch(name):
        return ""
    if _writable(value):
        return _percent_encode(f'{name}="{value}"')
    return _percent_encode(f'{name}=~"{label_regex(value)}"')


_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What neither UI generation reads back as itself between quotes: a backslash, a double quote,
# a C0 control character (JSON strings refuse them raw) and lone surrogates (not UTF-8).
_UNWRITABLE = re.compile(r'[\\"\x00-\x1f\ud800-\udfff]')
# How label_regex writes a character that is not itself in Go RE2 or cannot be written as itself.
_REGEX_CHAR = {
    **{ord(c): f"[{c}]" for c in ".+*?()|{}$["},  # RE2 metacharacters, literal in a class
    ord("]"): "[]]",  # a leading "]" is literal in an RE2 class
    ord("^"): "[]^]",  # literal in a class where it is not first: also matches "]"
    ord("\\"): "[[-^]",  # the range "[" to "^" around U+005C: also matches "[", "]", "^"
    ord('"'): "[!-#]",  # the range "!" to "#" around U+0022: also matches "!", "#"
    # Every code point but U+0020-U+10FFFF: exactly the C0 controls (RE2's Perl flags let a
    # negated class match newline).
    **{c: "[^ -\U0010ffff]" for c in range(0x20)},
    **{c: "." for c in range(0xD800, 0xE000)},  # lone surrogates (orjson refuses them anyway)
}


def _writable(value: str) -> bool:
    return _UNWRITABLE.search(value) is None


def label_regex(value: str) -> str:
    r"""A Go RE2 regex without backslash, quote or control character that fully matches `value`.

    Metacharacters are written as one-character classes (``[.]``, ``[(]``, ``[]]``), exact. The
    characters that cannot be written in a class by themselves are written as small classes
    around them: ``^`` as ``[]^]`` (also matches ``]``), ``\`` as ``[[-^]`` (also ``[ ] ^``),
    ``"`` as ``[!-#]`` (also ``! #``), a C0 control character as ``[^ -U+10FFFF]`` (any C0
    control). So the regex matches `value` and only the values of its length that differ from it
    at such characters by one of those neighbours. Alertmanager anchors it as ``^(?:regex)$``
    (pkg/labels/matcher.go).
    """
    return value.translate(_REGEX_CHAR)


_ASCII_QUOTE = {c: f"%{c:02X}" for c in range(128) if not (chr(c).isalnum() or chr(c) in "_.~-")}


def _percent_encode(text: str) -> str:
    """quote(text, safe=""): a translation table for ASCII, per-byte encoding for the rest."""
    if text.isascii():
        return text.translate(_ASCII_QUOTE)
    return "".join(
        ch.translate(_ASCII_QUOTE) if ch.isascii() else "".join(f"%{b:02X}" for b in ch.encode())
        for ch in text
    )


class Enricher:
    """Links for an alert: the first catalogue entry whose matchers match sets a link; the
    alert's own `runbook_url`/`dashboard_url` annotation wins (routes.yaml `runbooks`)."""

    RENDERED_KEPT = 65_536  # rendered links kept; forgotten all at once when full

    def __init__(self, runbooks: Sequence[RunbookConfig]) -> None:
        """Compile the catalogue's matchers and URL templates (Jinja2 over labels, annotations)."""
        self._entries = [
            _Entry(
                r.all_matchers(),
                _Link.compile(r.runbook_url) if r.runbook_url else None,
                _Link.compile(r.dashboard_url) if r.dashboard_url else None,
            )
            for r in runbooks
        ]
        # A template that reads only some labels (alertname, service) gives the same link for
        # every alert that shares them: rendered once per (template, values read).
        self._rendered: dict[tuple[_Link, tuple[object, ...]], str] = {}

    def links(
        self, labels: Mapping[str, str], annotations: Mapping[str, str], external_url: str
    ) -> Links:
        """The links for an alert with `labels` and `annotations` sent by the Alertmanager at
        `external_url` ("" if unknown: no silence link). A template that fails gives ""."""
        runbook = annotations.get("runbook_url", "")
        dashboard = annotations.get("dashboard_url", "")
        for entry in self._entries:
            if runbook and dashboard:
                break
            if not all_match(entry.matchers, labels):
                continue
            if not runbook and entry.runbook is not None:
                runbook = self._render(entry.runbook, labels, annotations)
            if not dashboard and entry.dashboard is not None:
                dashboard = self._render(entry.dashboard, labels, annotations)
        return Links(runbook, dashboard, silence_url(external_url, labels))

    def _render(
        self, link: _Link, labels: Mapping[str, str], annotations: Mapping[str, str]
    ) -> str:
        if link.reads is None:
            return _render(link.template, labels, annotations)
        mappings = {"labels": labels, "annotations": annotations}
        key = (link, tuple(mappings[m].get(k, _MISSING) for m, k in link.reads))
        rendered = self._rendered.get(key)
        if rendered is None:
            if len(self._rendered) >= self.RENDERED_KEPT:
                self._rendered.clear()
            rendered = self._rendered[key] = _render(link.template, labels, annotations)
        return rendered


def _render(template: Template, labels: Mapping[str, str], annotations: Mapping[str, str]) -> str:
    try:
        return template.render({"labels": dict(labels), "annotations": dict(annotations)}).strip()
    except TemplateError:
        return ""
