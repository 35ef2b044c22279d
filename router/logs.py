"""Logging: one JSON object per line (or readable text), with event name and context fields.

Code logs named events, `event(log, logging.INFO, "webhook_accepted", correlation_id=...)`,
never free text: an event name is something to grep and alert on, and its fields (the
correlation id of the payload among them) go in as JSON keys. Every line goes through
`redact`, so a token that reaches a message or a traceback is masked.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_SECRETS: list[str] = []  # values masked in every line: tokens, keys, passwords, webhook URLs
MASK = "<redacted>"
MIN_SECRET = 6  # shorter values would mask ordinary words


def set_secrets(values: list[str]) -> None:
    """Mask these values wherever they would appear in a log line (called on start and reload).

    Replaces the previous set. Values shorter than MIN_SECRET characters are not masked.
    """
    _SECRETS[:] = sorted({v for v in values if len(v) >= MIN_SECRET}, key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every secret given to set_secrets replaced by MASK, longest secrets first."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def event(logger: logging.Logger, level: int, name: str, /, **fields: Any) -> None:
    """Log the event `name` at `level` with context fields (any values; JSON via str() if needed).

    E.g. `event(log, logging.INFO, "webhook_accepted", group_key=...)`: the JSON formatter writes
    `{"event": "webhook_accepted", "group_key": ...}`, the text formatter `key=value` pairs.
    """
    logger.log(level, name, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, event, the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON, secrets redacted; a traceback goes in `exception`."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(out, default=str).decode())


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal: `HH:MM:SS LEVEL event key=value ...` (UTC time)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as text, secrets redacted; multi-line fields follow as indented blocks."""
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        fields = getattr(record, "fields", {})
        multiline = {k: v for k, v in fields.items() if isinstance(v, str) and "\n" in v}
        inline = " ".join(f"{k}={v}" for k, v in fields.items() if k not in multiline)
        text = f"{ts} {record.levelname:<7} {record.getMessage()} {inline}".rstrip()
        for k, v in multiline.items():
            text += f"\n  --- {k} ---\n" + "\n".join(f"  {line}" for line in v.splitlines())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


def configure(fmt: str = "text", level: str = "info") -> None:
    """Send every log record to stderr, formatted as "json" or "text", from `level` up.

    `level` is a logging level name in any case ("debug", "info", ...); an unknown name raises
    ValueError. aiohttp's access log and httpx's request log are kept to warnings.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # httpx logs every request URL at INFO, and Telegram's URLs carry the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
