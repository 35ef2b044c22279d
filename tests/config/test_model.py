"""router/config/model.py: the routes.yaml schema. Defaults and bounds of each section; the
`storage` section's one engine (SQLite at path, PostgreSQL at url) and its database password
from the URL, ${VAR} or password_file (one of them), never shown; receivers' channel lists;
routes, inhibit rules and runbooks as matchers; the config's lookups and paths."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from router.channels import CHANNELS
from router.config import config_notes, parse_config
from router.errors import ConfigError
from router.matchers import Matcher, MatchType
from router.store.engines import store_for, where
from router.store.postgres import PostgresStore
from router.store.sqlite import SqliteStore

REST = "receivers: [{name: d}]\nroute: {receiver: d}\n"


def storage(section: str) -> str:
    """routes.yaml text with this `storage` section (its keys on lines 2...)."""
    return f"storage:\n{section}{REST}"


def test_sqlite_is_the_default_and_needs_nothing_new() -> None:
    cfg = parse_config(REST)
    assert cfg.storage.url is None
    assert isinstance(store_for(cfg), SqliteStore)


@pytest.mark.parametrize(
    ("section", "env", "password"),
    [
        ("  url: postgresql://router@db:5432/alerts\n", {}, None),
        ("  url: postgresql://router:${PW}@db:5432/alerts\n", {"PW": "s3/cr#3t?@x"}, "s3/cr#3t?@x"),
        ("  url: postgresql://router:p%40ss@db:5432/alerts\n", {}, "p@ss"),
        (
            "  url: postgres://router@db:5432/alerts\n  password: ${PW}\n",
            {"PW": "s3cr3t"},
            "s3cr3t",
        ),
    ],
)
def test_url_selects_postgresql_and_its_password_is_kept_apart(
    section: str, env: dict[str, str], password: str | None
) -> None:
    cfg = parse_config(storage(section), env=env)
    assert cfg.storage.url is not None and cfg.storage.url.endswith("router@db:5432/alerts")
    secret = cfg.storage.password
    assert (secret.get_secret_value() if secret else None) == password
    store = store_for(cfg)
    assert isinstance(store, PostgresStore) and store.path == cfg.storage.url
    assert where(cfg) == cfg.storage.url
    for shown in (repr(cfg), str(cfg.storage), repr(store), where(cfg)):
        assert password is None or password not in shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://router@/alerts?host=/run/postgresql",  # a Unix socket (libpq's form)
        "postgresql://router@%2Frun%2Fpostgresql/alerts",
        "postgresql://router@[::1]:5432/alerts?sslmode=require",
        "postgresql://router@db1:5432,db2:5433/alerts?target_session_attrs=read-write",
    ],
)
def test_urls_libpq_accepts_are_accepted(url: str) -> None:
    cfg = parse_config(storage(f"  url: {url}\n  password: pw\n"))
    assert cfg.storage.url == url


def test_password_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "pg-password").write_text("fr0m-a-file\n")
    cfg = parse_config(
        storage("  url: postgresql://router@db/alerts\n  password_file: pg-password\n"),
        base_dir=str(tmp_path),
    )
    assert cfg.storage.password is not None
    assert cfg.storage.password.get_secret_value() == "fr0m-a-file"
    assert "fr0m-a-file" not in repr(cfg)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "  path: state.db\n  url: postgresql://router@db/alerts\n",
            "f.yaml:1: storage: path and url are mutually exclusive: path selects SQLite, url"
            " PostgreSQL; set one of them",
        ),
        (
            "  url: postgresql://router:inline-pw@db/alerts\n  password: other\n",
            "f.yaml:1: storage: url has a password and so has password: set one of them",
        ),
        (
            "  url: postgresql://router:inline-pw@db/alerts\n  password_file: pw\n",
            "f.yaml:1: storage: url has a password and so has password_file: set one of them",
        ),
        (
            "  url: postgresql://router@db/alerts\n  password: a\n  password_file: pw\n",
            "f.yaml:1: storage: password and password_file are mutually exclusive: set one of them",
        ),
        (
            "  url: mysql://router:inline-pw@db/alerts\n",
            "f.yaml:1: storage: url: expected postgresql://user@host:5432/database, got scheme"
            " 'mysql'",
        ),
        (
            "  url: postgresql://router:inline-pw@db\n",
            "f.yaml:1: storage: url: expected postgresql://user@host:5432/database (host and"
            " database)",
        ),
        (
            "  url: postgresql://router@db/alerts?password=inline-pw\n",
            "f.yaml:1: storage: url: a password in the query; use storage.password or"
            " password_file",
        ),
        (
            "  url: postgresql://router@db/alerts?sslmode=verify-full&sslpassword=inline-pw\n",
            "f.yaml:1: storage: url: a password in the query; use storage.password or"
            " password_file",
        ),
        (
            "  url: postgresql://router:inline-pw@db:99999/alerts\n",
            "f.yaml:1: storage: url: the port is not a number from 0 to 65535",
        ),
        (
            "  path: state.db\n  password: x\n",
            "f.yaml:1: storage: password is for storage.url (PostgreSQL); SQLite has none",
        ),
    ],
)
def test_storage_problems(section: str, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(storage(section), file="f.yaml")
    assert str(refused.value) == expected
    assert "inline-pw" not in str(refused.value)


def test_check_config_notes_synchronous_is_ignored_on_postgresql() -> None:
    """The shipped routes.yaml sets synchronous; a user who swaps path for url is told that
    it no longer applies (PostgreSQL's own synchronous_commit does), and SQLite is not."""
    url = "  url: postgresql://router@db:5432/alerts\n"
    note = "storage.synchronous: ignored with storage.url (PostgreSQL's synchronous_commit applies)"
    assert note in config_notes(parse_config(storage(url + "  synchronous: full\n")))
    assert note not in config_notes(parse_config(storage(url)))
    assert note not in config_notes(parse_config(storage("  synchronous: full\n")))


def test_defaults_of_every_section() -> None:
    cfg = parse_config(REST)
    server, delivery, storage = cfg.server, cfg.delivery, cfg.storage
    assert (server.listen, server.max_body_bytes, server.max_backlog) == (
        "0.0.0.0:9095",
        64 * 1024 * 1024,
        10_000,
    )
    assert server.shutdown_grace == timedelta(seconds=10)
    assert server.auth.bearer_token is None and server.auth.basic_auth is None
    assert (storage.path, storage.synchronous) == ("alert-router.db", "normal")
    assert (storage.stale_after, storage.retention) == (timedelta(hours=6), timedelta(days=7))
    assert (delivery.max_age, delivery.storm_threshold) == (timedelta(hours=1), 10)
    assert (delivery.min_backoff, delivery.max_backoff) == (
        timedelta(seconds=1),
        timedelta(minutes=5),
    )
    assert cfg.templates.directory is None and cfg.chatops.telegram is None
    [receiver] = cfg.receivers
    assert (receiver.send_resolved, receiver.repeat_interval, receiver.escalate) == (
        True,
        timedelta(hours=4),
        None,
    )
    assert cfg.inhibit_rules == [] and cfg.runbooks == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "server: {max_body_bytes: 1023}\n" + REST,
            "f.yaml:1: server.max_body_bytes: Input should be greater than or equal to 1024, got 1023",
        ),
        (
            "server: {max_backlog: 0}\n" + REST,
            "f.yaml:1: server.max_backlog: Input should be greater than or equal to 1, got 0",
        ),
        (
            "delivery: {storm_threshold: 1}\n" + REST,
            "f.yaml:1: delivery.storm_threshold: Input should be greater than or equal to 2, got 1",
        ),
        (
            "server: {auth: {basic_auth: {username: '', password: x}}}\n" + REST,
            "f.yaml:1: server.auth.basic_auth.username: String should have at least 1 character,"
            " got ''",
        ),
        (
            "runbooks: [{matchers: [], runbook_url: x}]\n" + REST,
            "f.yaml:1: runbooks[0].matchers: List should have at least 1 item after validation,"
            " not 0",
        ),
        (
            "receivers: [{name: d}]\nroute: {receiver: d, mute_time_intervals: [night]}\n",
            "f.yaml:2: route: mute_time_intervals is not supported by alert-router: mute or"
            " schedule in Alertmanager, which then does not send those alerts at all",
        ),
        (
            "receivers: [{name: d, escalate: {after: 1h}}]\nroute: {receiver: d}\n",
            "f.yaml:1: receivers[0].escalate.to: required key is missing",
        ),
        (
            "receivers: []\nroute: {receiver: d}\n",
            "f.yaml:1: receivers: List should have at least 1 item after validation, not 0",
        ),
    ],
)
def test_bounds_and_required_keys(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(text, file="f.yaml")
    assert str(refused.value) == expected


def test_the_config_is_frozen() -> None:
    cfg = parse_config(REST)
    with pytest.raises(ValidationError, match="Instance is frozen"):
        cfg.server.listen = "127.0.0.1:1"  # type: ignore[misc]


def test_a_receiver_has_a_list_per_channel_kind_and_yields_them_in_that_order() -> None:
    cfg = parse_config(
        """
receivers:
  - name: d
    pagerduty_configs: [{routing_key: R0UTINGKEY0000000000000000000000}]
    slack_configs: [{bot_token: a, channel: c1}, {bot_token: b, channel: c2}]
    telegram_configs: [{bot_token: "1:t", chat_id: 1}]
route: {receiver: d}
"""
    )
    [receiver] = cfg.receivers
    assert [f"{kind}_configs" for kind in CHANNELS] == [
        "telegram_configs",
        "slack_configs",
        "email_configs",
        "pagerduty_configs",
    ]
    assert [(kind, i) for kind, i, _ in receiver.channels()] == [
        ("telegram", 0),
        ("slack", 0),
        ("slack", 1),
        ("pagerduty", 0),
    ]
    assert [c.channel for k, _, c in receiver.channels() if k == "slack"] == ["c1", "c2"]


def m(name: str, type_: MatchType, value: str) -> Matcher:
    return Matcher.create(name, type_, value)


def test_routes_inhibit_rules_and_runbooks_combine_every_matcher_form() -> None:
    cfg = parse_config(
        """
receivers: [{name: d}]
route:
  receiver: d
  routes:
    - match: {team: db}
      match_re: {service: "api|web"}
      matchers: ['severity!="info"', '{env=~"prod.*", dc="x"}']
      continue: true
inhibit_rules:
  - source_match: {severity: critical}
    source_matchers: ['alertname="Down"']
    target_match_re: {severity: "warning|info"}
    equal: [service]
runbooks:
  - matchers: ['alertname=~".+"']
    runbook_url: "https://runbooks/{{ labels.alertname }}"
"""
    )
    [route] = cfg.route.routes
    assert route.continue_ is True and cfg.route.continue_ is False
    assert route.all_matchers() == (
        m("team", MatchType.EQUAL, "db"),
        m("service", MatchType.REGEX, "api|web"),
        m("severity", MatchType.NOT_EQUAL, "info"),
        m("env", MatchType.REGEX, "prod.*"),
        m("dc", MatchType.EQUAL, "x"),
    )
    [rule] = cfg.inhibit_rules
    assert rule.sources() == (
        m("severity", MatchType.EQUAL, "critical"),
        m("alertname", MatchType.EQUAL, "Down"),
    )
    assert rule.targets() == (m("severity", MatchType.REGEX, "warning|info"),)
    assert rule.equal == ["service"]
    [runbook] = cfg.runbooks
    assert runbook.all_matchers() == (m("alertname", MatchType.REGEX, ".+"),)
    assert cfg.route.all_matchers() == ()


def test_receiver_by_name_and_paths_relative_to_the_file() -> None:
    cfg = parse_config(
        "receivers: [{name: a}, {name: b}]\nroute: {receiver: a}\n",
        file="/etc/alert-router/routes.yaml",
        base_dir="/etc/alert-router",
    )
    assert cfg.receiver("b").name == "b"
    with pytest.raises(KeyError):
        cfg.receiver("c")
    assert cfg.resolve_path("state/a.db") == Path("/etc/alert-router/state/a.db")
    assert cfg.resolve_path("/var/lib/a.db") == Path("/var/lib/a.db")
    assert cfg.source == "/etc/alert-router/routes.yaml"
    assert "source" not in cfg.model_dump() and "base_dir" not in cfg.model_dump()


def test_check_config_notes_an_open_webhook() -> None:
    base = "receivers: [{name: r}]\nroute: {receiver: r}\n"
    note = (
        "server.auth: not set, so anyone who reaches 0.0.0.0:9095 may post alerts and read the"
        " API (set bearer_token or basic_auth unless the network is private)"
    )
    assert note in config_notes(parse_config(base))
    assert note not in config_notes(parse_config("server: {auth: {bearer_token: t}}\n" + base))
    basic = "server: {auth: {basic_auth: {username: u, password: p}}}\n"
    assert note not in config_notes(parse_config(basic + base))
