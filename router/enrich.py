"""Runbook, dashboard and silence links for an alert, from the routes.yaml catalogue."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import Template
from jinja2.exceptions import TemplateError

from router.config import TEMPLATE_STRINGS, RunbookConfig
from router.matchers import Matcher, all_match


@dataclass(frozen=True)
class Links:
    runbook_url: str = ""
    dashboard_url: str = ""
    silence_url: str = ""


@dataclass(frozen=True)
class _Entry:
    matchers: tuple[Matcher, ...]
    runbook: Template | None
    dashboard: Template | None


def silence_url(external_url: str, labels: Mapping[str, str]) -> str:
    """Alertmanager UI link to a new silence prefilled with the alert's exact labels."""
    if not external_url:
        return ""
    matchers = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return (
        f"{external_url.rstrip('/')}/#/silences/new?filter={_percent_encode('{' + matchers + '}')}"
    )


_ASCII_QUOTE = {c: f"%{c:02X}" for c in range(128) if not (chr(c).isalnum() or chr(c) in "_.~-")}


def _percent_encode(text: str) -> str:
    """quote(text, safe=""): a translation table for ASCII, per-byte encoding for the rest."""
    if text.isascii():
        return text.translate(_ASCII_QUOTE)
    return "".join(
        ch.translate(_ASCII_QUOTE) if ch.isascii() else "".join(f"%{b:02X}" for b in ch.encode())
        for ch in text
    )


def _escape(value: str) -> str:
    """A label value inside double quotes, escaped as Alertmanager's matcher syntax reads it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Enricher:
    """First catalogue entry whose matchers match sets a link; the alert's own annotation wins."""

    SILENCE_CACHE = 100_000  # links kept: an update re-renders every alert of its group

    def __init__(self, runbooks: Sequence[RunbookConfig]) -> None:
        # (externalURL, fingerprint) -> (labels, silence link); the labels are compared, as a
        # sender other than Alertmanager may reuse a fingerprint for other labels.
        self._silence: dict[tuple[str, str], tuple[Mapping[str, str], str]] = {}
        self._entries = [
            _Entry(
                r.all_matchers(),
                TEMPLATE_STRINGS.from_string(r.runbook_url) if r.runbook_url else None,
                TEMPLATE_STRINGS.from_string(r.dashboard_url) if r.dashboard_url else None,
            )
            for r in runbooks
        ]

    def links(
        self,
        labels: Mapping[str, str],
        annotations: Mapping[str, str],
        external_url: str,
        fingerprint: str,
    ) -> Links:
        runbook = annotations.get("runbook_url", "")
        dashboard = annotations.get("dashboard_url", "")
        context: dict[str, Any] = {"labels": dict(labels), "annotations": dict(annotations)}
        for entry in self._entries:
            if runbook and dashboard:
                break
            if not all_match(entry.matchers, labels):
                continue
            if not runbook and entry.runbook is not None:
                runbook = _render(entry.runbook, context)
            if not dashboard and entry.dashboard is not None:
                dashboard = _render(entry.dashboard, context)
        return Links(runbook, dashboard, self._silence_url(external_url, labels, fingerprint))

    def _silence_url(self, external_url: str, labels: Mapping[str, str], fingerprint: str) -> str:
        key = (external_url, fingerprint)
        cached = self._silence.get(key)
        if cached is not None and cached[0] == labels:
            return cached[1]
        if len(self._silence) >= self.SILENCE_CACHE:
            self._silence.clear()
        url = silence_url(external_url, labels)
        self._silence[key] = (dict(labels), url)
        return url


def _render(template: Template, context: dict[str, Any]) -> str:
    try:
        return template.render(context).strip()
    except TemplateError:
        return ""
