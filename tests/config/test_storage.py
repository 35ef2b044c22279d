"""The `storage` section: exactly one engine (SQLite at path, PostgreSQL at url), the database
password from the URL, ${VAR} or password_file (one of them), and never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import config_notes, parse_config
from router.errors import ConfigError
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
