"""router/logs.py: the JSON and text lines, their fields, and secrets masked in both."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import orjson
import pytest

from router.logs import (
    MASK,
    JsonFormatter,
    TextFormatter,
    configure,
    event,
    redact,
    set_secrets,
)


@pytest.fixture(autouse=True)
def no_secrets() -> Iterator[None]:
    yield
    set_secrets([])


def record(
    name: str = "webhook_accepted", level: int = logging.INFO, **fields: object
) -> logging.LogRecord:
    """The record `event` makes, as a handler receives it (created 2026-11-23T07:00:00.123Z)."""
    logger = logging.getLogger("router.test")
    made: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, r: logging.LogRecord) -> None:
            made.append(r)

    keep = Keep()
    logger.addHandler(keep)
    before, logger.level = logger.level, logging.DEBUG
    try:
        event(logger, level, name, **fields)
    finally:
        logger.removeHandler(keep)
        logger.level = before
    [r] = made
    r.created = 1_795_417_200.123  # 2026-11-23T07:00:00.123Z
    return r


def test_a_json_line_has_ts_level_logger_event_and_the_fields() -> None:
    line = JsonFormatter().format(
        record(correlation_id="5d0c", alerts=3, group={"a": "1"}, at=ValueError("x"))
    )
    assert "\n" not in line
    assert orjson.loads(line) == {
        "ts": "2026-11-23T07:00:00.123+00:00",
        "level": "info",
        "logger": "router.test",
        "event": "webhook_accepted",
        "correlation_id": "5d0c",
        "alerts": 3,
        "group": {"a": "1"},
        "at": "x",  # not JSON: its str()
    }


def test_a_json_line_carries_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        r = record("failed", logging.ERROR)
        r.exc_info = sys.exc_info()
    out = orjson.loads(JsonFormatter().format(r))
    assert out["level"] == "error" and out["event"] == "failed"
    assert out["exception"].startswith("Traceback") and "RuntimeError: boom" in out["exception"]


def test_a_text_line_is_time_level_event_and_pairs() -> None:
    text = TextFormatter().format(record(correlation_id="5d0c", alerts=3))
    assert text == "07:00:00 INFO    webhook_accepted correlation_id=5d0c alerts=3"
    assert TextFormatter().format(record("idle", logging.WARNING)) == "07:00:00 WARNING idle"


def test_multiline_text_fields_follow_as_indented_blocks() -> None:
    text = TextFormatter().format(record("dry_run_notification", incident="k3v9x", text="a\nb"))
    assert text == (
        "07:00:00 INFO    dry_run_notification incident=k3v9x\n  --- text ---\n  a\n  b"
    )


def test_secrets_are_masked_in_both_formats_longest_first() -> None:
    set_secrets(["token-123", "token-123456", "short"])
    r = record("sent", url="https://x/bottoken-123456/send", again="token-123 and short")
    assert orjson.loads(JsonFormatter().format(r))["url"] == f"https://x/bot{MASK}/send"
    assert orjson.loads(JsonFormatter().format(r))["again"] == f"{MASK} and short"
    assert (
        TextFormatter().format(r).endswith(f"url=https://x/bot{MASK}/send again={MASK} and short")
    )


def test_set_secrets_replaces_the_previous_set() -> None:
    set_secrets(["first-secret"])
    assert redact("first-secret") == MASK
    set_secrets(["second-secret"])
    assert redact("first-secret second-secret") == f"first-secret {MASK}"
    set_secrets([])
    assert redact("second-secret") == "second-secret"


def test_a_secret_in_a_traceback_is_masked() -> None:
    set_secrets(["xoxb-secret-token"])
    try:
        raise ValueError("bad token xoxb-secret-token")
    except ValueError:
        r = record("failed", logging.ERROR)
        r.exc_info = sys.exc_info()
    assert "xoxb-secret-token" not in JsonFormatter().format(r)
    assert f"bad token {MASK}" in TextFormatter().format(r)


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {n: logging.getLogger(n).level for n in ("aiohttp.access", "httpx")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in quiet.items():
        logging.getLogger(name).setLevel(lvl)


@pytest.mark.parametrize(("fmt", "formatter"), [("json", JsonFormatter), ("text", TextFormatter)])
def test_configure_sends_everything_to_stderr(
    root_logging: None, fmt: str, formatter: type[logging.Formatter]
) -> None:
    configure(fmt, "DeBuG")
    root = logging.getLogger()
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
    assert isinstance(handler.formatter, formatter)
    assert root.level == logging.DEBUG
    assert logging.getLogger("aiohttp.access").level == logging.WARNING
    assert logging.getLogger("httpx").level == logging.WARNING  # its lines carry bot tokens


def test_configure_refuses_an_unknown_level(root_logging: None) -> None:
    with pytest.raises(ValueError, match="Unknown level: 'LOUD'"):
        configure("json", "loud")
