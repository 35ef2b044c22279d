"""Inhibition as Alertmanager does it (inhibit/inhibit.go), over every firing alert the router knows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from router.config import InhibitRuleConfig
from router.matchers import Matcher, all_match

BucketKey = tuple[str, ...]  # one rule's `equal` label values ("" for a missing label)
_V = TypeVar("_V")


@dataclass(frozen=True)
class InhibitRule:
    """One inhibit_rules entry, compiled: source and target matchers, `equal` label names."""

    sources: tuple[Matcher, ...]
    targets: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: InhibitRuleConfig) -> InhibitRule:
        """Compile an inhibit_rules entry (legacy source_match[_re]/target_match[_re] included)."""
        return cls(cfg.sources(), cfg.targets(), tuple(cfg.equal))

    def key(self, labels: Mapping[str, str]) -> BucketKey:
        """The values of the `equal` labels: alerts inhibit each other only within one key."""
        return tuple(labels.get(name, "") for name in self.equal)


@dataclass
class _Source:
    labels: Mapping[str, str]
    last_seen: datetime


@dataclass
class Inhibitor:
    """Firing source and target alerts indexed per rule by their `equal` label values.

    `observe` is called for every alert received (and every firing alert at start);
    `inhibited_by` answers with the fingerprint of one firing, fresh source alert that inhibits
    the given labels, or None. A source is fresh while seen within `stale_after` of `now`.
    `take_affected` lists the targets whose judgement a change of sources may have changed,
    so that they are judged again in the same plan (Alertmanager judges at each flush).
    """

    rules: tuple[InhibitRule, ...]
    stale_after: timedelta
    _sources: list[dict[BucketKey, dict[str, _Source]]] = field(default_factory=list)
    _targets: list[dict[BucketKey, dict[str, None]]] = field(default_factory=list)
    # (rule index, key) of the buckets whose sources came, came back from stale, or went
    _changed: dict[tuple[int, BucketKey], None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._sources = [{} for _ in self.rules]
        self._targets = [{} for _ in self.rules]

    def observe(
        self, fingerprint: str, labels: Mapping[str, str], firing: bool, last_seen: datetime
    ) -> None:
        """Index (firing) or forget (resolved) an alert as a source and as a target.

        `last_seen` is when it was received (aware datetime): a source older than
        `stale_after` stops inhibiting.
        """
        for i, rule in enumerate(self.rules):
            if all_match(rule.targets, labels):
                key = rule.key(labels)
                if firing:
                    self._targets[i].setdefault(key, {})[fingerprint] = None
                else:
                    _discard(self._targets[i], key, fingerprint)
            if not all_match(rule.sources, labels):
                continue
            key = rule.key(labels)
            buckets = self._sources[i]
            if firing:
                bucket = buckets.setdefault(key, {})
                prev = bucket.get(fingerprint)
                if prev is None or prev.last_seen < last_seen - self.stale_after:
                    self._changed[(i, key)] = None
                bucket[fingerprint] = _Source(labels, last_seen)
            elif _discard(buckets, key, fingerprint):
                self._changed[(i, key)] = None

    def take_affected(self) -> list[str]:
        """Fingerprints of the firing targets that share a key with a source that came or went
        since the last call, in the order observed; the list of changes is emptied."""
        affected: dict[str, None] = {}
        for i, key in self._changed:
            affected.update(self._targets[i].get(key, {}))
        self._changed.clear()
        return list(affected)

    def inhibited_by(
        self, fingerprint: str, labels: Mapping[str, str], now: datetime
    ) -> str | None:
        """The fingerprint of a fresh firing source that inhibits `labels` at `now`, or None.

        As Alertmanager's Inhibitor.Mutes (inhibit/inhibit.go): a rule applies when the
        target matchers match and a source has equal `equal` label values; an alert never
        inhibits itself, and one matching both sides is not inhibited by another that also
        matches both sides.
        """
        fresh_since = now - self.stale_after
        for rule, buckets in zip(self.rules, self._sources, strict=True):
            if not all_match(rule.targets, labels):
                continue
            bucket = buckets.get(rule.key(labels))
            if not bucket:
                continue
            two_sided = all_match(rule.sources, labels)
            for source_fp, source in bucket.items():
                if source_fp == fingerprint or source.last_seen < fresh_since:
                    continue
                if two_sided and all_match(rule.targets, source.labels):
                    continue
                return source_fp
        return None


def _discard(buckets: dict[BucketKey, dict[str, _V]], key: BucketKey, fp: str) -> bool:
    """Remove `fp` from the bucket `key` (and the bucket once empty); whether it was there."""
    bucket = buckets.get(key)
    if bucket is None or fp not in bucket:
        return False
    del bucket[fp]
    if not bucket:
        del buckets[key]
    return True
