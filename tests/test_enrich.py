"""Silence links: the same as computed afresh, also when a fingerprint comes back with other labels."""

from __future__ import annotations

from urllib.parse import quote

from router.enrich import Enricher, silence_url

AM = "http://alertmanager:9093"


def test_silence_link_is_alertmanagers_filter_percent_encoded() -> None:
    labels = {"alertname": "Disk full", "instance": 'db-1:9100"x', "zone": "é"}
    expected = '{alertname="Disk full",instance="db-1:9100\\"x",zone="é"}'
    assert silence_url(AM + "/", labels) == f"{AM}/#/silences/new?filter={quote(expected, safe='')}"


def test_cached_links_follow_the_labels_not_only_the_fingerprint() -> None:
    enricher = Enricher([])
    first = {"alertname": "A", "instance": "x"}
    assert enricher.links(first, {}, AM, "fp1").silence_url == silence_url(AM, first)
    assert enricher.links(dict(first), {}, AM, "fp1").silence_url == silence_url(AM, first)
    # A sender other than Alertmanager reusing fp1 for other labels gets their own link.
    other = {"alertname": "B", "instance": "y"}
    assert enricher.links(other, {}, AM, "fp1").silence_url == silence_url(AM, other)
    # Another Alertmanager (externalURL) gets a link to itself.
    assert enricher.links(other, {}, "http://am2:9093", "fp1").silence_url.startswith(
        "http://am2:9093/#/silences/new?filter="
    )
