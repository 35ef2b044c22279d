"""What a bad routes.yaml is told: every problem as file:line: key.path: message, exactly.

One file per error in tests/data/config/ (prometheus/alertmanager config/testdata does so),
templates.directory's problems included (tests/data/config/templates-*/).
"""

from __future__ import annotations

import pytest

from router.config import load_config, parse_config
from router.errors import ConfigError
from router.render import default_template_dir

from ..helpers import DATA

BAD = DATA / "config"

# file -> every problem it must report, exactly ({f} is the file's path).
EXPECTED = {
    "unknown-key.yaml": ["{f}:7: route.routes[0].recevier: unknown key (did you mean 'receiver'?)"],
    "webhook-configs.yaml": [
        "{f}:3: receivers[0].webhook_configs: unknown key: alert-router has no webhook_configs; "
        "it delivers through telegram_configs, slack_configs, email_configs, pagerduty_configs"
    ],
    "bad-regex.yaml": ['{f}:9: route.routes[2].matchers[0]: invalid regex "(api": missing )'],
    "undefined-receiver.yaml": [
        "{f}:7: route.routes[0].receiver: undefined receiver 'databse' (known: default)"
    ],
    "duplicate-receiver.yaml": [
        "{f}:4: receivers[2].name: duplicate receiver name 'default' (first at receivers[0])"
    ],
    "duplicate-key.yaml": ["{f}:5: route.receiver: duplicate key (first at line 4)"],
    "root-route-matchers.yaml": [
        "{f}:5: route.matchers: the root route must not have any matchers (it matches every alert)",
        "{f}:6: route.continue: the root route cannot have continue set",
    ],
    "bad-duration.yaml": [
        "{f}:3: receivers[0].repeat_interval: invalid duration '5x': expected a number and unit, "
        "e.g. 30s, 5m, 1h30m"
    ],
    "token-and-file.yaml": [
        "{f}:4: receivers[0].telegram_configs[0]: bot_token and bot_token_file are mutually "
        "exclusive: set one of them"
    ],
    "secret-file-missing.yaml": [
        "{f}:4: receivers[0].pagerduty_configs[0]: routing_key_file: cannot read "
        "{d}/does-not-exist.key: No such file or directory"
    ],
    "missing-env.yaml": [
        "{f}:3: server.auth.bearer_token: environment variable ALERT_ROUTER_TEST_UNSET_VARIABLE "
        "is not set (write ${ALERT_ROUTER_TEST_UNSET_VARIABLE:-default} for a default)"
    ],
    "unset-env-and-more.yaml": [
        "{f}:3: server.auth.bearer_token: environment variable ALERT_ROUTER_TEST_UNSET_VARIABLE "
        "is not set (write ${ALERT_ROUTER_TEST_UNSET_VARIABLE:-default} for a default)",
        "{f}:6: receivers[0].repeat_interval: invalid duration 'soon': expected a number and "
        "unit, e.g. 30s, 5m, 1h30m",
        "{f}:9: receivers[0].telegram_configs[0].chat_id: environment variable "
        "ALERT_ROUTER_TEST_UNSET_CHAT is not set (write ${ALERT_ROUTER_TEST_UNSET_CHAT:-default} "
        "for a default)",
        "{f}:13: route.routes[0].recevier: unknown key (did you mean 'receiver'?)",
    ],
    "bad-regex-class.yaml": [
        '{f}:7: route.routes[0].matchers[0]: invalid regex "/api/[a-": missing ]: [a-'
    ],
    "bad-matcher-quote.yaml": [
        '{f}:6: route.routes[0].matchers[0]: matcher value contains unescaped double quote: ="critical"'
    ],
    "invalid-yaml.yaml": ["{f}:5: invalid YAML: mapping values are not allowed here"],
    "time-intervals.yaml": [
        "{f}:6: route.routes[0]: mute_time_intervals is not supported by alert-router: mute or "
        "schedule in Alertmanager, which then does not send those alerts at all"
    ],
    "slack-incomplete.yaml": [
        "{f}:4: receivers[0].slack_configs[0]: needs bot_token and channel (Web API) or webhook_url"
    ],
    "bad-label-name.yaml": [
        "{f}:6: inhibit_rules[0].equal[1]: invalid label name 'not-a-label': must match "
        "[a-zA-Z_][a-zA-Z0-9_]*"
    ],
    "bad-email-header.yaml": [
        "{f}:7: receivers[0].email_configs[0].headers.Subject: Subject is written by "
        "alert-router; use another header name"
    ],
    "alias-bomb.yaml": ["{f}: the document expands to more than 100000 values (alias bomb?)"],
    "bad-template.yaml": [
        "{f}:7: runbooks[0].runbook_url: invalid Jinja2 template: unexpected end of template, "
        "expected 'end of print statement'. (template line 1)"
    ],
    "receivers-not-a-list.yaml": ["{f}:1: receivers: expected a list, got a mapping"],
    "empty.yaml": ["{f}:1: the file is empty"],
    "bad-listen.yaml": [
        "{f}:2: server.listen: invalid listen address 'localhost': expected HOST:PORT, e.g. 0.0.0.0:9095"
    ],
    "bad-bodies-in-flight.yaml": [
        "{f}:3: server.max_body_bytes_in_flight: 4096 is below max_body_bytes (100000): a webhook"
        " of max_body_bytes could never be accepted; raise it or lower max_body_bytes"
    ],
    "intake-process.yaml": [
        "{f}:4: server.intake_process: removed: alert-router now runs as one process, which "
        "answers webhooks itself; delete this key"
    ],
    # templates.directory is checked at load (check-config, serve, reload), each problem naming
    # its template file: tests/data/config/templates-*/.
    "template-directory-missing.yaml": [
        "{f}:2: templates.directory: no such folder: {d}/no-such-templates"
    ],
    "template-syntax.yaml": ["{d}/templates-syntax/telegram/message.html.j2:3: unexpected '}'"],
    "template-filter.yaml": [
        "{d}/templates-filter/slack/message.mrkdwn.j2:1: No filter named 'shout'."
    ],
    "template-include.yaml": [
        "{d}/templates-include/email/text.txt.j2:3: include 'email/footer.txt.j2': no such "
        "template in {d}/templates-include or {t}"
    ],
    "template-digest.yaml": [
        "{d}/templates-digest/telegram/digest/message.html.j2:4: unexpected end of template, "
        "expected 'end of statement block'."
    ],
}


def test_every_bad_config_file_has_an_expectation() -> None:
    files = {p.name for p in BAD.glob("*.yaml")} - {"secret-file.yaml"}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_config_reports_where_and_why(name: str) -> None:
    path = BAD / name
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    got = [str(p) for p in caught.value.problems]
    want = [
        e.replace("{f}", str(path))
        .replace("{d}", str(BAD.resolve()))
        .replace("{t}", str(default_template_dir()))
        for e in EXPECTED[name]
    ]
    assert got == want


def test_all_problems_are_reported_at_once() -> None:
    text = """
receivers:
  - name: default
    repeat_interval: soon
route:
  receiver: default
  routes:
    - matchers: ['a=~"("']
    - matchers: ['b="x"']
      colour: red
    - receiver: nobody
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, file="r.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "r.yaml:4: receivers[0].repeat_interval: invalid duration 'soon': expected a number and unit, e.g. 30s, 5m, 1h30m",
        'r.yaml:8: route.routes[0].matchers[0]: invalid regex "(": missing )',
        "r.yaml:10: route.routes[1].colour: unknown key (expected one of: receiver, continue, match, match_re, matchers, routes, group_by, group_wait, group_interval, repeat_interval)",
        "r.yaml:11: route.routes[2].receiver: undefined receiver 'nobody' (known: default)",
    ]
