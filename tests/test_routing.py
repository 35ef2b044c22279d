"""The route tree walk as a table: inline YAML tree x label sets -> receivers (dispatch/route_test.go)."""

from __future__ import annotations

import pytest

from router.config import parse_config
from router.routing import Route, explain, match_receivers

RECEIVERS = ["default", "team-a", "team-b", "pager", "db", "db-pager", "audit"]

TREE = """
route:
  receiver: default
  routes:
    - matchers: ['team="a"']
      receiver: team-a
      routes:
        - matchers: ['severity="critical"']
          receiver: pager
    - matchers: ['team="b"']
      receiver: team-b
      continue: true
    - matchers: ['team=~"b|c"', 'env!="dev"']
      receiver: audit
    - matchers: ['component="db"']
      routes:  # no receiver: inherits default
        - matchers: ['severity="critical"']
          receiver: db-pager
          continue: true
        - matchers: ['severity=~"critical|warning"']
          receiver: db
    - match_re: {service: "^(?:foo1|foo2)$"}
      receiver: team-b
"""


def root(tree: str = TREE) -> Route:
    receivers = "\n".join(f"  - name: {name}" for name in RECEIVERS)
    return Route.from_config(parse_config(f"receivers:\n{receivers}\n{tree}").route)


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ({}, ["default"]),  # nothing matches: the root's receiver
        ({"team": "a"}, ["team-a"]),
        ({"team": "a", "severity": "critical"}, ["pager"]),  # the deepest match wins
        ({"team": "a", "severity": "warning"}, ["team-a"]),  # no child matches: the parent
        ({"team": "b"}, ["team-b", "audit"]),  # continue: the next sibling is tried too
        ({"team": "b", "env": "dev"}, ["team-b"]),  # != on the next sibling
        ({"team": "c"}, ["audit"]),
        ({"team": "a", "component": "db"}, ["team-a"]),  # first match without continue stops
        ({"component": "db"}, ["default"]),  # a receiver-less route sends to its parent's
        ({"component": "db", "severity": "warning"}, ["db"]),
        ({"component": "db", "severity": "critical"}, ["db-pager", "db"]),  # continue, nested
        ({"service": "foo1"}, ["team-b"]),  # legacy match_re, anchored
        ({"service": "foo12"}, ["default"]),
        ({"team": "A"}, ["default"]),  # values are case-sensitive
    ],
)
def test_match_receivers(labels: dict[str, str], receivers: list[str]) -> None:
    assert match_receivers(root(), labels) == receivers


@pytest.mark.parametrize(
    ("labels", "paths"),
    [
        ({"team": "b"}, ["route.routes[1]", "route.routes[2]"]),
        (
            {"component": "db", "severity": "critical"},
            ["route.routes[3].routes[0]", "route.routes[3].routes[1]"],
        ),
        ({}, ["route"]),
    ],
)
def test_match_returns_the_routes_in_tree_order(labels: dict[str, str], paths: list[str]) -> None:
    assert [r.path for r in root().match(labels)] == paths


def test_a_missing_label_matches_as_the_empty_string() -> None:
    tree = """
route:
  receiver: default
  routes:
    - {matchers: ['env=""'], receiver: team-a}
    - {matchers: ['env=~".+"'], receiver: team-b}
"""
    assert match_receivers(root(tree), {}) == ["team-a"]
    assert match_receivers(root(tree), {"env": "prod"}) == ["team-b"]


def test_explain_tells_where_the_walk_stopped_and_why() -> None:
    assert explain(root(), {"team": "a", "component": "db"}) == [
        "✓ route (matches all): receiver default",
        '  ✓ route.routes[0] {team="a"}: receiver team-a',
        '    ✗ route.routes[0].routes[0] {severity="critical"}: no match: severity="critical"'
        " (label severity='')",
        "    → no child matched: route.routes[0] sends to team-a",
        "  … 4 later sibling(s) not tried: route.routes[0] matched without continue",
    ]
