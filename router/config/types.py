"""Field types shared by every config section: durations, secrets, matchers, templates, addresses.

Channel config models (router/channels/<kind>/config.py) build on these and import nothing else
from router.config, so that the model can import them without a cycle.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    SecretStr,
    ValidationInfo,
    model_validator,
)

from router.errors import MatcherError
from router.matchers import LABEL_NAME_RE, Matcher, compile_anchored, parse_matchers

_DURATION_RE = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)

# Jinja2 strings written in routes.yaml run sandboxed: they are config, not code.
TEMPLATE_STRINGS = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


def parse_duration(value: Any) -> timedelta:
    """A duration as Alertmanager and Prometheus write it (`model.ParseDuration`).

    Accepts `30s`, `5m`, `1h30m`, `1d`, `1w`, `1y`, `250ms`, `0` or a timedelta; raises
    ValueError naming the value otherwise (no sign, no fraction, units largest first).
    """
    if isinstance(value, timedelta):
        return value
    text = str(value).strip()
    m = _DURATION_RE.match(text)
    if not text or text == "0" or m is None or not any(m.groups()):
        if text == "0":
            return timedelta(0)
        raise ValueError(
            f"invalid duration {text!r}: expected a number and unit, e.g. 30s, 5m, 1h30m"
        )
    seconds = sum(int(g) * u for g, u in zip(m.groups(), _DURATION_UNITS, strict=True) if g)
    return timedelta(seconds=seconds)


def _check_label_name(name: str) -> str:
    if not LABEL_NAME_RE.match(name):
        raise ValueError(f"invalid label name {name!r}: must match [a-zA-Z_][a-zA-Z0-9_]*")
    return name


def _parse_matcher_line(value: Any) -> tuple[Matcher, ...]:
    if not isinstance(value, str):
        raise ValueError(f"a matcher is a string such as 'severity=\"critical\"', got {value!r}")
    try:
        return tuple(parse_matchers(value))
    except MatcherError as exc:
        raise ValueError(str(exc)) from None


def _check_regex(value: str) -> str:
    try:
        compile_anchored(value)
    except MatcherError as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_template(value: str) -> str:
    try:
        TEMPLATE_STRINGS.from_string(value)
    except TemplateSyntaxError as exc:
        raise ValueError(
            f"invalid Jinja2 template: {exc.message} (template line {exc.lineno})"
        ) from None
    return value


def _check_listen(value: str) -> str:
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {value!r}: expected HOST:PORT, e.g. 0.0.0.0:9095")
    return value


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"invalid smarthost {value!r}: expected HOST:PORT, e.g. smtp.example.com:587"
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
LabelName = Annotated[str, AfterValidator(_check_label_name)]
MatcherLine = Annotated[tuple[Matcher, ...], PlainValidator(_parse_matcher_line)]
Regex = Annotated[str, AfterValidator(_check_regex)]
TemplateStr = Annotated[str, AfterValidator(_check_template)]
ListenAddr = Annotated[str, AfterValidator(_check_listen)]
HostPort = Annotated[str, AfterValidator(_check_hostport)]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        """`key:` with nothing after it (YAML null) means the key's default, as in Alertmanager."""
        if not isinstance(data, dict):
            return data
        optional = {n for n, f in cls.model_fields.items() if not f.is_required()}
        optional |= {f.alias for f in cls.model_fields.values() if f.alias and not f.is_required()}
        return {k: v for k, v in data.items() if v is not None or k not in optional}


def _read_secret_files(data: Any, info: ValidationInfo, *keys: str) -> Any:
    """Resolve `x_file` into `x`; both set is an error (as Alertmanager's bot_token_file)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    base = Path((info.context or {}).get("base_dir", "."))
    for key in keys:
        file_key = f"{key}_file"
        if data.get(file_key) is None:
            data.pop(file_key, None)
            continue
        if data.get(key) is not None:
            raise ValueError(f"{key} and {file_key} are mutually exclusive: set one of them")
        path = base / str(data.pop(file_key))
        try:
            data[key] = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{file_key}: cannot read {path}: {exc.strerror}") from None
    return data


class WithSecrets(Strict):
    """A config block whose `secret_keys` may each be given inline or as `<key>_file`.

    A `<key>_file` path is relative to the config file's folder (validation context
    `base_dir`); the file's text, stripped, becomes the SecretStr (prometheus/alertmanager
    `notify/telegram/config.go`: `bot_token` or `bot_token_file`, never both).
    """

    secret_keys: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: Any, info: ValidationInfo) -> Any:
        return _read_secret_files(data, info, *cls.secret_keys)


def secret_values(model: BaseModel) -> list[str]:
    """Every SecretStr's value in a config (nested models, lists, tuples), to keep out of logs."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(model)
    return found
