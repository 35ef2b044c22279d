"""router/cli.py: each command's output and exit code, run in-process as `alert-router` runs it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from router import __version__
from router.cli import main

from .helpers import DATA

BAD = DATA / "config"

ROUTES = """
receivers:
  - name: default
    slack_configs: [{bot_token: x, channel: c}, {bot_token: y, channel: d}]
  - name: pager
    pagerduty_configs: [{routing_key: R0UTINGKEY0000000000000000000000}]
route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
      group_wait: 10s
    - matchers: ['team="db"']
      receiver: default
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
runbooks:
  - matchers: ['alertname=~".+"']
    runbook_url: "https://runbooks.example/{{ labels.alertname }}"
"""


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES)
    return path


def test_check_config_says_what_it_found_and_notes(
    routes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(routes)]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out == (
        f"{routes}: OK: 2 receiver(s), 3 channel config(s), 1 inhibit rule(s), 1 runbook rule(s)\n"
        "  note: server.auth: not set, so anyone who reaches 0.0.0.0:9095 may post alerts and"
        " read the API (set bearer_token or basic_auth unless the network is private)\n"
        "  note: route.group_by: ignored, Alertmanager does the grouping\n"
        "  note: route.routes[0].group_wait: ignored, Alertmanager does the grouping\n"
    )


def test_check_config_checks_every_file_and_fails_if_one_is_bad(
    routes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = BAD / "unknown-key.yaml"
    assert main(["check-config", str(bad), str(routes)]) == 1
    out = capsys.readouterr()
    assert out.out.startswith(f"{routes}: OK: 2 receiver(s)")
    assert out.err == (
        f"{bad}: 1 problem(s):\n"
        f"  {bad}:7: route.routes[0].recevier: unknown key (did you mean 'receiver'?)\n"
    )


def test_check_config_refuses_a_broken_user_template(capsys: pytest.CaptureFixture[str]) -> None:
    path = BAD / "template-filter.yaml"
    assert main(["check-config", str(path)]) == 1
    assert capsys.readouterr().err == (
        f"{path}: 1 problem(s):\n"
        f"  {BAD.resolve()}/templates-filter/slack/message.mrkdwn.j2:1: No filter named 'shout'.\n"
    )


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=critical", "team=db"], "pager,default"),  # continue: the next one too
        (["severity=critical"], "pager"),
        (["severity=warning", "team=web"], "default"),  # no child: the root's receiver
        ([], "default"),
        (['severity="critical"', "team=db"], "pager,default"),  # amtool's quoting is read
    ],
)
def test_routes_test_prints_the_receivers_as_amtool(
    routes: Path, capsys: pytest.CaptureFixture[str], labels: list[str], receivers: str
) -> None:
    assert main(["routes", "test", "--config", str(routes), *labels]) == 0
    assert capsys.readouterr().out == receivers + "\n"


def test_routes_test_explain_prints_the_walk_then_the_receivers(
    routes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["routes", "test", "--config", str(routes), "--explain", "severity=critical", "team=db"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "✓ route (matches all): receiver default"
    assert lines[1].startswith('  ✓ route.routes[0] {severity="critical"}  continue')
    assert lines[-1] == "pager,default"


@pytest.mark.parametrize(
    ("label", "error"),
    [
        ("severity=~crit.*", "severity=~crit.*: labels must be given as name=value pairs\n"),
        ("severity!=x", "severity!=x: labels must be given as name=value pairs\n"),
        ("no-operator", "no-operator: "),
        ("1abc=x", "1abc=x: "),
    ],
)
def test_routes_test_refuses_what_is_not_name_value(
    routes: Path, capsys: pytest.CaptureFixture[str], label: str, error: str
) -> None:
    assert main(["routes", "test", "--config", str(routes), label]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith(error)


def test_routes_test_with_a_bad_config_lists_its_problems(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = BAD / "bad-regex.yaml"
    assert main(["routes", "test", "--config", str(bad), "a=b"]) == 1
    assert capsys.readouterr().err == (
        f"{bad}: 1 problem(s):\n"
        f'  {bad}:9: route.routes[2].matchers[0]: invalid regex "(api": missing )\n'
    )


@pytest.fixture
def root_logging() -> Iterator[None]:
    """serve configures the root logger: put it back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_serve_with_a_bad_config_exits_1_before_serving(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = BAD / "intake-process.yaml"
    assert main(["serve", "--config", str(bad), "--log-format", "json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}: 1 problem(s):\n  {bad}:")
    assert "removed: alert-router now runs as one process" in err


@pytest.mark.parametrize(
    ("argv", "code", "stream", "text"),
    [
        (["--version"], 0, "out", f"alert-router {__version__}\n"),
        ([], 2, "err", "the following arguments are required: COMMAND"),
        (["routes"], 2, "err", "the following arguments are required: SUBCOMMAND"),
        (["check-config"], 2, "err", "the following arguments are required: FILE"),
        (["serve", "--log-format", "xml"], 2, "err", "invalid choice: 'xml'"),
        (["serve", "--log-level", "trace"], 2, "err", "invalid choice: 'trace'"),
        (["frobnicate"], 2, "err", "invalid choice: 'frobnicate'"),
    ],
)
def test_arguments_argparse_refuses_or_answers(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, stream: str, text: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == code
    assert text in getattr(capsys.readouterr(), stream)
