"""Runbook, dashboard and silence links: the catalogue as a table; silence links both UIs read."""

from __future__ import annotations

import json
import re
import warnings
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.exceptions import TemplateError

from router.config import TEMPLATE_STRINGS, parse_config
from router.enrich import Enricher, _reads, silence_url

from .amui import filter_of, parse_filter

AM = "http://alertmanager:9093"


def test_silence_link_is_alertmanagers_filter_percent_encoded() -> None:
    labels = {"alertname": "Disk full", "instance": 'db-1:9100"x', "zone": "é"}
    expected = '{alertname="Disk full",instance=~"db-1:9100[!-#]x",zone="é"}'
    assert silence_url(AM + "/", labels) == f"{AM}/#/silences/new?filter={quote(expected, safe='')}"


def test_links_follow_the_labels_and_the_alertmanager() -> None:
    enricher = Enricher([])
    first = {"alertname": "A", "instance": "x"}
    assert enricher.links(first, {}, AM).silence_url == silence_url(AM, first)
    # The same labels again, then other ones (a sender reusing a fingerprint): each its own.
    assert enricher.links(dict(first), {}, AM).silence_url == silence_url(AM, first)
    other = {"alertname": "B", "instance": "y"}
    assert enricher.links(other, {}, AM).silence_url == silence_url(AM, other)
    # Another Alertmanager (externalURL) gets a link to itself.
    assert enricher.links(other, {}, "http://am2:9093").silence_url.startswith(
        "http://am2:9093/#/silences/new?filter="
    )


# Label values from public bug reports on silence links: Windows paths, PromQL, systemd unit
# names (systemd-escape writes "-" as \x2d), JSON, and the control characters the UIs choke on.
AWKWARD_VALUES = [
    "C:\\Program Files\\App\\app.exe",
    "\\\\fileserver\\share",
    'rate(http_requests_total{code=~"5.."}[5m]) > 0.1',
    "systemd-fsck@dev-disk-by\\x2duuid-0b1e\\x2d77.service",
    '{"a": [1, 2]}',
    "line one\nline two",
    "col1\tcol2",
    "dos line\r\n",
    "ends with backslash\\",
    '"',
    "^start$ [a-z]+ (x|y)? {2,3} . *",
    "emoji 🔥 and é",
    "\x00\x1f\x7f\u2028",
]


def _ui_matchers(link: str) -> list[dict[str, object]]:
    """Both UI generations read the link, and read it alike."""
    text = filter_of(link)
    old, new = parse_filter(text, json_strings=False), parse_filter(text, json_strings=True)
    assert old == new, text
    return new


def _selects(matchers: list[dict[str, object]], labels: dict[str, str]) -> bool:
    for m in matchers:
        value = labels.get(str(m["name"]), "")
        if m["isRegex"]:
            # Alertmanager anchors as ^(?:re)$; Python's re reads these constructs as RE2 does
            # (it only warns that "[[]" might once mean a nested set, which RE2 has not).
            assert "\\" not in str(m["value"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                hit = re.fullmatch(f"(?:{m['value']})", value) is not None
        else:
            hit = value == m["value"]
        if hit != m["isEqual"]:
            return False
    return True


@pytest.mark.parametrize("value", AWKWARD_VALUES)
def test_a_silence_link_selects_the_alert_in_both_ui_generations(value: str) -> None:
    labels = {"alertname": "Awkward", "value": value}
    matchers = _ui_matchers(silence_url(AM, labels))
    assert _selects(matchers, labels)
    assert not _selects(matchers, {**labels, "value": value + "x"})
    assert not _selects(matchers, {**labels, "alertname": "Other"})


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), st.text()))
def test_any_labels_give_a_link_both_uis_read_and_that_selects_them(
    labels: dict[str, str],
) -> None:
    link = silence_url(AM, labels)
    if not labels:
        assert link == ""
        return
    assert _selects(_ui_matchers(link), labels)


# What label_regex lets stand in for each character it cannot write as itself.
_NEIGHBOURS = {"\\": "[\\]^", '"': '!"#', "^": "]^"} | {
    chr(c): "".join(map(chr, range(0x20))) for c in range(0x20)
}


def test_odd_values_are_written_with_small_classes() -> None:
    assert silence_url(AM, {"p": "C:\\Program Files\\x", "q": 'job="api"', "r": "a\tb^"}) == (
        f"{AM}/#/silences/new?filter="
        + quote(
            '{p=~"C:[[-^]Program Files[[-^]x",q=~"job=[!-#]api[!-#]",r=~"a[^ -\U0010ffff]b[]^]"}',
            safe="",
        )
    )


@settings(max_examples=500, deadline=None)
@given(
    st.text(min_size=1),
    st.data(),
    st.sampled_from(list('[\\]^!"#/x\n\t\x1f ')) | st.characters(exclude_categories=("Cs",)),
)
def test_a_link_selects_its_value_and_only_the_documented_neighbours(
    value: str, data: st.DataObject, other: str
) -> None:
    """A value with one character changed is selected only where label_regex says it is."""
    i = data.draw(st.integers(0, len(value) - 1))
    labels = {"alertname": "A", "value": value}
    matchers = _ui_matchers(silence_url(AM, labels))
    regex = re.search('[\\\\"\x00-\x1f]', value) is not None
    selected = other == value[i] or (regex and other in _NEIGHBOURS.get(value[i], ""))
    neighbour = value[:i] + other + value[i + 1 :]
    assert _selects(matchers, {**labels, "value": neighbour}) == selected


def test_plain_values_stay_equality_matchers_and_odd_names_are_left_out() -> None:
    labels = {"alertname": "Disk full", "zone": "é", "a.b": "x", "job": "node"}
    assert _ui_matchers(silence_url(AM, labels)) == [
        {"name": n, "value": v, "isRegex": False, "isEqual": True}
        for n, v in [("alertname", "Disk full"), ("job", "node"), ("zone", "é")]
    ]
    assert silence_url(AM, {"a.b": "x"}) == ""


CATALOGUE = """
receivers: [{name: r}]
route: {receiver: r}
runbooks:
  - matchers: ['component=~"postgres|mysql"']
    runbook_url: "https://runbooks.example.com/db/{{ labels.alertname | lower }}"
    dashboard_url: "https://grafana.example.com/d/db?var-instance={{ labels.instance | urlencode }}"
  - matchers: ['alertname=~".+"']
    runbook_url: "https://runbooks.example.com/alerts/{{ labels.alertname | lower }}"
  - matchers: ['team="x"']
    dashboard_url: "https://grafana.example.com/d/{{ annotations.board }}"
  - matchers: ['team="broken"']
    dashboard_url: "{{ labels.missing.deeper }}"
"""
ENRICHER = Enricher(parse_config(CATALOGUE).runbooks)


@pytest.mark.parametrize(
    ("labels", "annotations", "runbook", "dashboard"),
    [
        # the first matching entry sets each link
        (
            {"alertname": "DiskFull", "component": "postgres", "instance": "db 1:9100"},
            {},
            "https://runbooks.example.com/db/diskfull",
            "https://grafana.example.com/d/db?var-instance=db%201%3A9100",
        ),
        # a later entry fills what the earlier ones left empty
        (
            {"alertname": "CPUHigh", "team": "x"},
            {"board": "cpu"},
            "https://runbooks.example.com/alerts/cpuhigh",
            "https://grafana.example.com/d/cpu",
        ),
        # the alert's own annotations win
        (
            {"alertname": "DiskFull", "component": "mysql", "instance": "i"},
            {"runbook_url": "https://wiki/disk", "dashboard_url": "https://g/own"},
            "https://wiki/disk",
            "https://g/own",
        ),
        # nothing matches: no links
        ({"severity": "info"}, {}, "", ""),
        # a template that fails to render gives no link, not an error
        ({"team": "broken"}, {}, "", ""),
    ],
)
def test_links_from_the_catalogue(
    labels: dict[str, str], annotations: dict[str, str], runbook: str, dashboard: str
) -> None:
    links = ENRICHER.links(labels, annotations, AM)
    assert (links.runbook_url, links.dashboard_url) == (runbook, dashboard)
    assert links.silence_url == silence_url(AM, labels)


@pytest.mark.parametrize(
    ("external_url", "labels", "link"),
    [
        ("", {"alertname": "A"}, ""),  # no externalURL: no silence link
        (AM, {}, ""),  # no label: nothing to match
        (AM, {"a.b": "x"}, ""),  # only names the UIs cannot parse
        (AM + "/", {"alertname": "A"}, f"{AM}/#/silences/new?filter=%7Balertname%3D%22A%22%7D"),
        (
            AM,
            {"b": "2", "a": "1"},  # sorted by name
            f"{AM}/#/silences/new?filter=%7Ba%3D%221%22%2Cb%3D%222%22%7D",
        ),
        (AM, {"a": "x.y"}, f"{AM}/#/silences/new?filter=%7Ba%3D%22x.y%22%7D"),  # = stays =
        (AM, {"a": 'x"y'}, f"{AM}/#/silences/new?filter=%7Ba%3D~%22x%5B%21-%23%5Dy%22%7D"),
    ],
)
def test_silence_url(external_url: str, labels: dict[str, str], link: str) -> None:
    assert silence_url(external_url, labels) == link


# Templates whose output is a function of the alert: the cached link must equal a fresh render.
DETERMINISTIC = [
    ("https://r/{{ labels.alertname | lower }}", (("labels", "alertname"),)),
    (
        "https://r/{{ labels['alertname'] }}/{{ annotations.summary | urlencode }}",
        (("labels", "alertname"), ("annotations", "summary")),
    ),
    ("{{ labels.x }}{% if labels.y is defined %}+y{% endif %}", (("labels", "x"), ("labels", "y"))),
    ("{{ labels.alertname ~ labels.alertname }}", (("labels", "alertname"),)),
    ("{{ labels._x | default('none') }}", (("labels", "_x"),)),
    ("{{ labels.get('x', 'd') }}", None),  # a method of the mapping: not cached
    ("{{ labels | tojson }}", None),  # the whole mapping
    ("{% for k, v in labels | dictsort %}{{ k }}={{ v }},{% endfor %}", None),
    ("{% set labels = {'x': 'set'} %}{{ labels.x }}", None),
    ("{{ labels[0] }}", None),
    ("{{ labels.x.y }}", (("labels", "x"),)),  # an attribute of a str: fails alike
    ("static", ()),
]
# Templates whose output is not a function of the alert: never cached.
UNCACHEABLE = [
    "{{ [1, 2, 3] | random }}",
    "{{ lipsum(1) }}",
    "{{ labels.items }}",
    "{{ range(3) }}",
]
LABEL_SETS = [
    {"alertname": "A", "x": "1"},
    {"alertname": "A", "x": "2", "y": ""},
    {"alertname": "B"},
    {"alertname": "A", "x": "1"},
    {"alertname": "A", "x": ""},
    {"alertname": "A", "_x": "u", "severity": "critical"},
    {"alertname": "A", "x": "1", "y": "3"},
]


def _enricher(template: str) -> Enricher:
    config = (
        "receivers: [{name: r}]\nroute: {receiver: r}\n"
        f"runbooks: [{{matchers: ['alertname=~\".*\"'], runbook_url: {json.dumps(template)}}}]\n"
    )
    return Enricher(parse_config(config).runbooks)


@pytest.mark.parametrize(("template", "reads"), DETERMINISTIC)
def test_a_link_rendered_once_per_values_read_equals_a_fresh_render(
    template: str, reads: tuple[tuple[str, str], ...] | None
) -> None:
    assert _reads(template) == reads
    enricher, fresh = _enricher(template), TEMPLATE_STRINGS.from_string(template)
    for labels in LABEL_SETS * 2:
        annotations = {"summary": labels.get("x", "none") + " é/&"}
        try:
            expected = fresh.render(labels=labels, annotations=annotations).strip()
        except TemplateError:
            expected = ""
        assert enricher.links(labels, annotations, AM).runbook_url == expected, labels


@pytest.mark.parametrize("template", UNCACHEABLE)
def test_templates_that_read_more_than_the_alert_are_not_cached(template: str) -> None:
    assert _reads(template) is None
