"""Inhibition as Alertmanager does it (inhibit/inhibit.go), over every firing alert the router knows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from router.config import InhibitRuleConfig
from router.matchers import Matcher, all_match


@dataclass(frozen=True)
class InhibitRule:
    sources: tuple[Matcher, ...]
    targets: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: InhibitRuleConfig) -> InhibitRule:
        return cls(cfg.sources(), cfg.targets(), tuple(cfg.equal))

    def key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(labels.get(name, "") for name in self.equal)


@dataclass
class _Source:
    labels: Mapping[str, str]
    last_seen: datetime


@dataclass
class Inhibitor:
    """Firing source alerts indexed per rule by their `equal` label values.

    `observe` is called for every alert whose state changes; `inhibited_by` answers with the
    fingerprint of one firing, fresh source alert that inhibits the given labels, or None.
    """

    rules: tuple[InhibitRule, ...]
    stale_after: timedelta
    _index: list[dict[tuple[str, ...], dict[str, _Source]]] = field(default_factory=list)
    # A source appeared since the last sweep: alerts of other groups may be inhibited now.
    sources_added: bool = False

    def __post_init__(self) -> None:
        self._index = [{} for _ in self.rules]

    def observe(
        self, fingerprint: str, labels: Mapping[str, str], firing: bool, last_seen: datetime
    ) -> None:
        for rule, buckets in zip(self.rules, self._index, strict=True):
            if not all_match(rule.sources, labels):
                continue
            key = rule.key(labels)
            if firing:
                bucket = buckets.setdefault(key, {})
                self.sources_added |= fingerprint not in bucket
                bucket[fingerprint] = _Source(labels, last_seen)
            else:
                gone = buckets.get(key)
                if gone is not None:
                    gone.pop(fingerprint, None)
                    if not gone:
                        del buckets[key]

    def inhibited_by(
        self, fingerprint: str, labels: Mapping[str, str], now: datetime
    ) -> str | None:
        fresh_since = now - self.stale_after
        for rule, buckets in zip(self.rules, self._index, strict=True):
            if not all_match(rule.targets, labels):
                continue
            bucket = buckets.get(rule.key(labels))
            if not bucket:
                continue
            # An alert on both sides is never inhibited by another that is also on both sides.
            two_sided = all_match(rule.sources, labels)
            for source_fp, source in bucket.items():
                if source_fp == fingerprint or source.last_seen < fresh_since:
                    continue
                if two_sided and all_match(rule.targets, source.labels):
                    continue
                return source_fp
        return None
