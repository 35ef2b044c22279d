"""Matcher parsing and matching as Alertmanager 0.25 does (pkg/labels/parse.go, matcher.go)."""

from __future__ import annotations

import pytest

from router.errors import MatcherError
from router.matchers import MatchType, parse_matcher, parse_matchers


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('severity="critical"', "severity", MatchType.EQUAL, "critical"),
        ("severity=critical", "severity", MatchType.EQUAL, "critical"),
        ('  team != "db"  ', "team", MatchType.NOT_EQUAL, "db"),
        ('service=~"api|web"', "service", MatchType.REGEX, "api|web"),
        ('env!~"prod.*"', "env", MatchType.NOT_REGEX, "prod.*"),
        ('msg="say \\"hi\\""', "msg", MatchType.EQUAL, 'say "hi"'),
        ('path="C:\\\\temp"', "path", MatchType.EQUAL, "C:\\temp"),
        ('line="a\\nb"', "line", MatchType.EQUAL, "a\nb"),
        ('re=~"\\d+"', "re", MatchType.REGEX, "\\d+"),  # a spurious escape keeps its backslash
        ('empty=""', "empty", MatchType.EQUAL, ""),
        ("ns:sub=x", "ns:sub", MatchType.EQUAL, "x"),
    ],
)
def test_parse_one(text: str, name: str, op: MatchType, value: str) -> None:
    m = parse_matcher(text)
    assert (m.name, m.type, m.value) == (name, op, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("severity", "bad matcher format: severity"),
        ('1abc="x"', 'bad matcher format: 1abc="x"'),
        ('a="b', 'matcher value contains unescaped double quote: "b'),
        ('a="b"c"', 'matcher value contains unescaped double quote: "b"c"'),
        ('a="x\\"', 'matcher value contains unescaped double quote: "x\\"'),
        ('a=~"(x"', 'invalid regex "(x": missing )'),
        ('a=~"(?<=x)y"', 'invalid regex "(?<=x)y": invalid perl operator: (?<='),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(MatcherError) as caught:
        parse_matcher(text)
    assert str(caught.value) == message


def test_several_in_one_string_and_commas_inside_quotes() -> None:
    ms = parse_matchers('{alertname="Disk, full", severity=~"warning|critical"}')
    assert [(m.name, m.value) for m in ms] == [
        ("alertname", "Disk, full"),
        ("severity", "warning|critical"),
    ]


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        ('service=~"api|web"', {"service": "api"}, True),
        ('service=~"api|web"', {"service": "api-gw"}, False),  # fully anchored
        ('service=~"api"', {"service": "xapi"}, False),
        ('service=~"a.c"', {"service": "a\nc"}, False),  # . does not match a newline
        ('service=~"abc$"', {"service": "abc\n"}, False),  # $ is end of text in RE2
        ('service=~"[[:alpha:]]+"', {"service": "abc"}, True),  # POSIX classes exist in RE2
        ('service=~"(?i)API"', {"service": "api"}, True),
        ('team=""', {}, True),  # a missing label is the empty string
        ('team!=""', {}, False),
        ('team=~".*"', {}, True),
        ('team=~".+"', {}, False),
        ('team!~"db"', {}, True),
        ('team!~"db|"', {}, False),
    ],
)
def test_matching(matcher: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(matcher).matches(labels) is expected


def test_str_round_trips() -> None:
    m = parse_matcher('msg=~"say \\"hi\\"\\n"')
    assert parse_matcher(str(m)) == m
