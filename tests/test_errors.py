"""router/errors.py: the hierarchy its docstring draws, and what each error carries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from router.errors import (
    AlertmanagerError,
    BodyRefused,
    ConfigError,
    ConfigProblem,
    LeaseLost,
    MatcherError,
    PayloadError,
    RenderError,
    RouterError,
    StoreError,
    StoreRefused,
)


@pytest.mark.parametrize(
    ("error", "parents"),
    [
        (ConfigError, (RouterError,)),
        (MatcherError, (RouterError, ValueError)),
        (PayloadError, (RouterError,)),
        (BodyRefused, (PayloadError, RouterError)),
        (StoreError, (RouterError,)),
        (StoreRefused, (StoreError, RouterError)),
        (LeaseLost, (StoreError, RouterError)),
        (RenderError, (RouterError,)),
        (AlertmanagerError, (RouterError,)),
    ],
)
def test_the_hierarchy_is_the_one_drawn(error: type[Exception], parents: tuple[type, ...]) -> None:
    assert all(issubclass(error, p) for p in parents)
    if error is not BodyRefused:
        assert not issubclass(error, PayloadError) or error is PayloadError
    if error not in (StoreRefused, LeaseLost):
        assert not issubclass(error, StoreError) or error is StoreError


@pytest.mark.parametrize(
    ("problem", "text"),
    [
        (
            ConfigProblem("routes.yaml", 14, "route.routes[2]", "invalid regex"),
            "routes.yaml:14: route.routes[2]: invalid regex",
        ),
        (ConfigProblem("routes.yaml", None, "server", "x"), "routes.yaml: server: x"),
        (ConfigProblem("routes.yaml", 3, "", "not a mapping"), "routes.yaml:3: not a mapping"),
        (ConfigProblem("routes.yaml", None, "", "empty"), "routes.yaml: empty"),
        (ConfigProblem("routes.yaml", 0, "a", "b"), "routes.yaml: a: b"),  # no line 0
    ],
)
def test_a_config_problem_reads_file_line_path_message(problem: ConfigProblem, text: str) -> None:
    assert str(problem) == text


def test_a_config_error_lists_every_problem_one_per_line() -> None:
    problems = [ConfigProblem("a.yaml", 1, "x", "one"), ConfigProblem("a.yaml", 2, "y", "two")]
    error = ConfigError(problems)
    assert error.problems == problems
    assert str(error) == "a.yaml:1: x: one\na.yaml:2: y: two"


def test_a_payload_error_carries_status_reason_and_problems() -> None:
    error = PayloadError(
        422, "schema", "not an Alertmanager payload", [{"path": "alerts", "error": "x"}]
    )
    assert (error.status, error.reason, str(error)) == (
        422,
        "schema",
        "not an Alertmanager payload",
    )
    assert error.problems == [{"path": "alerts", "error": "x"}]
    assert PayloadError(400, "invalid_json", "bad").problems == []


def test_a_refused_body_has_no_problems() -> None:
    error = BodyRefused(413, "too_large", "body larger than 10 bytes")
    assert (error.status, error.reason, error.problems) == (413, "too_large", [])
    assert str(error) == "body larger than 10 bytes" and error.retry_after is None
    busy = BodyRefused(503, "busy", "retry later", retry_after=timedelta(seconds=5))
    assert busy.retry_after == timedelta(seconds=5)
