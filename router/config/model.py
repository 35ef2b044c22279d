"""The routes.yaml schema: RouterConfig and its sections, as pydantic v2 models.

Every model forbids unknown keys and is frozen; validators compile matchers and templates, so a
bad regex stops the start. Field types shared with the channels' own config models are in
router/config/types.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from router.channels import CHANNELS, config_model
from router.chatops.config import SlackChatops, TelegramChatops
from router.config.types import (
    Duration,
    LabelName,
    ListenAddr,
    MatcherLine,
    Regex,
    Strict,
    TemplateStr,
    WithSecrets,
)
from router.matchers import Matcher, MatchType


class BasicAuth(WithSecrets):
    """HTTP basic credentials for the webhook and API (`password` or `password_file`)."""

    secret_keys = ("password",)

    username: str = Field(min_length=1)
    password: SecretStr


class AuthConfig(WithSecrets):
    """What callers of the webhook and API must present: a bearer token, basic auth, or both."""

    secret_keys = ("bearer_token",)

    bearer_token: SecretStr | None = None
    basic_auth: BasicAuth | None = None


class ServerConfig(Strict):
    """`server`: where to listen, who may call, request bounds, shutdown grace (timedelta)."""

    listen: ListenAddr = "0.0.0.0:9095"
    auth: AuthConfig = AuthConfig()
    # far above Alertmanager's largest groups (7,000 alerts: 4.5 MB): it does not retry a 413
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # webhook bodies held at once (being read, decoded, committed); past it 503 + Retry-After.
    # None: the larger of 128 MiB and two bodies of max_body_bytes (`bodies_in_flight`).
    max_body_bytes_in_flight: int | None = Field(default=None, ge=1024)
    max_backlog: int = Field(default=10_000, ge=1)
    shutdown_grace: Duration = timedelta(seconds=10)

    @field_validator("max_body_bytes_in_flight")
    @classmethod
    def _room_for_one_body(cls, value: int | None, info: ValidationInfo) -> int | None:
        """A body of max_body_bytes must fit in max_body_bytes_in_flight."""
        body = info.data.get("max_body_bytes")
        if value is not None and body is not None and value < body:
            raise ValueError(
                f"{value} is below max_body_bytes ({body}): a webhook of max_body_bytes could"
                " never be accepted; raise it or lower max_body_bytes"
            )
        return value

    @property
    def bodies_in_flight(self) -> int:
        """Bytes of webhook bodies held at once (max_body_bytes_in_flight or its default)."""
        if self.max_body_bytes_in_flight is not None:
            return self.max_body_bytes_in_flight
        return max(128 * 1024 * 1024, 2 * self.max_body_bytes)


class StorageConfig(WithSecrets):
    """`storage`: the engine (a SQLite file at `path`, the default, or PostgreSQL at `url`),
    SQLite's sync mode, and how long state is kept (timedelta).

    `url` set is what selects PostgreSQL (router/store/engines.py store_for); there is no
    second spelling of the choice.

    `url` is postgresql://user@host:port/database; its password is kept apart, in `password`
    (from the URL, `password` with ${VAR}, or `password_file`: one of them), so that `url` may
    be logged. Raises ValueError when both engines are named or the password is given twice.
    """

    secret_keys = ("password",)

    path: str = "alert-router.db"
    url: str | None = None
    password: SecretStr | None = None
    synchronous: Literal["normal", "full"] = "normal"
    stale_after: Duration = timedelta(hours=6)
    retention: Duration = timedelta(days=7)

    @model_validator(mode="before")
    @classmethod
    def _one_engine(cls, data: Any) -> Any:
        """`path` or `url`, not both; the URL's password moves to `password`."""
        if not isinstance(data, dict) or data.get("url") is None:
            if isinstance(data, dict) and (data.get("password") or data.get("password_file")):
                raise ValueError("password is for storage.url (PostgreSQL); SQLite has none")
            return data
        if data.get("path") is not None:
            raise ValueError(
                "path and url are mutually exclusive: path selects SQLite, url PostgreSQL;"
                " set one of them"
            )
        url, password = split_password(str(data["url"]))
        data = {**data, "url": url}
        if password is not None:
            if data.get("password") is not None or data.get("password_file") is not None:
                given = "password" if data.get("password") is not None else "password_file"
                raise ValueError(f"url has a password and so has {given}: set one of them")
            data["password"] = password
        return data


def split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None) for a postgresql:// URL.

    The user information is what precedes the URL's last "@", so that a password given by
    ${VAR} may hold "/", "#", "?" or "@" unencoded (percent-encoding is decoded too). Raises
    ValueError, never showing the password, if the URL is not postgresql:// or postgres://,
    names no host (in its authority, or `?host=/run/postgresql` for a Unix socket) or no
    database, has a port out of range, or carries a password (or sslpassword) in its query."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, location = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    bare = f"{scheme}{sep}{user}{at}{location}"
    parts = urlsplit(bare)
    if not sep or scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"url: expected postgresql://user@host:5432/database, got scheme {parts.scheme!r}"
        )
    query = parse_qs(parts.query)
    if "password" in query or "sslpassword" in query:
        raise ValueError("url: a password in the query; use storage.password or password_file")
    if not (parts.hostname or "host" in query) or parts.path in ("", "/"):
        raise ValueError("url: expected postgresql://user@host:5432/database (host and database)")
    try:
        parts.port  # noqa: B018 (raises ValueError unless a number 0-65535)
    except ValueError:
        if "," not in parts.netloc:  # several hosts: host:port,host:port
            raise ValueError("url: the port is not a number from 0 to 65535") from None
    return bare, (unquote(password) if colon else None)


class DeliveryConfig(Strict):
    """`delivery`: how long a notification may wait, the storm threshold, backoff bounds."""

    max_age: Duration = timedelta(hours=1)
    storm_threshold: int = Field(default=10, ge=2)
    min_backoff: Duration = timedelta(seconds=1)
    max_backoff: Duration = timedelta(minutes=5)


class TemplatesConfig(Strict):
    """`templates`: a folder whose files override the shipped templates of the same name."""

    directory: str | None = None


class EscalateConfig(Strict):
    """`escalate`: after how long unacked an incident goes to the receiver `to` as well."""

    after: Duration
    to: str = Field(min_length=1)


class Receiver(Strict):
    """The keys of a `receivers` entry but its channel configs: name, reminders, escalation."""

    name: str = Field(min_length=1)
    send_resolved: bool = True
    repeat_interval: Duration = timedelta(hours=4)
    escalate: EscalateConfig | None = None

    def channels(self) -> Iterator[tuple[str, int, BaseModel]]:
        """Each channel config as (kind, index in its list, config), in CHANNELS order."""
        for kind in CHANNELS:
            for i, cfg in enumerate(getattr(self, f"{kind}_configs")):
                yield kind, i, cfg


# A `receivers` entry: Receiver's keys, then one `<kind>_configs` list per entry of CHANNELS
# (router/channels/__init__.py), in its order: a new kind there is a new key here.
if TYPE_CHECKING:
    ReceiverConfig = Receiver
else:
    ReceiverConfig = create_model(
        "ReceiverConfig",
        __base__=Receiver,
        __module__=__name__,
        __doc__="One `receivers` entry: Receiver's keys and a list of configs per channel kind.",
        **{
            f"{kind}_configs": (list[config_model(kind)], Field(default_factory=list))
            for kind in CHANNELS
        },
    )


# ---------------------------------------------------------------- chatops


class ChatopsConfig(Strict):
    """`chatops`: acknowledging from chat, and silencing through Alertmanager's API."""

    alertmanager_url: str | None = None
    telegram: TelegramChatops | None = None
    slack: SlackChatops | None = None
    default_silence: Duration | None = None


# ---------------------------------------------------------------- routing


def _legacy_matchers(
    match: Mapping[str, str], match_re: Mapping[str, str], matchers: list[tuple[Matcher, ...]]
) -> tuple[Matcher, ...]:
    """match, match_re and matchers together, as Alertmanager's NewRoute combines them."""
    out = [Matcher.create(k, MatchType.EQUAL, v) for k, v in match.items()]
    out += [Matcher.create(k, MatchType.REGEX, v) for k, v in match_re.items()]
    for line in matchers:
        out.extend(line)
    return tuple(out)


class RouteConfig(Strict):
    """A node of the route tree, as Alertmanager writes it (grouping keys accepted, ignored)."""

    receiver: str | None = None
    continue_: bool = Field(default=False, alias="continue")
    match: dict[LabelName, str] = Field(default_factory=dict)
    match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    matchers: list[MatcherLine] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    # Alertmanager's grouping and timing keys: accepted so its route trees paste in, ignored.
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_time_intervals(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("mute_time_intervals", "active_time_intervals"):
                if key in data:
                    raise ValueError(
                        f"{key} is not supported by alert-router: mute or schedule in "
                        "Alertmanager, which then does not send those alerts at all"
                    )
        return data

    def all_matchers(self) -> tuple[Matcher, ...]:
        """match, match_re and matchers of this route as one tuple of matchers."""
        return _legacy_matchers(self.match, self.match_re, self.matchers)


class InhibitRuleConfig(Strict):
    """One `inhibit_rules` entry: source and target matchers and the labels that must be equal."""

    source_match: dict[LabelName, str] = Field(default_factory=dict)
    source_match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    source_matchers: list[MatcherLine] = Field(default_factory=list)
    target_match: dict[LabelName, str] = Field(default_factory=dict)
    target_match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    target_matchers: list[MatcherLine] = Field(default_factory=list)
    equal: list[LabelName] = Field(default_factory=list)

    def sources(self) -> tuple[Matcher, ...]:
        """Every source matcher (source_match, source_match_re, source_matchers)."""
        return _legacy_matchers(self.source_match, self.source_match_re, self.source_matchers)

    def targets(self) -> tuple[Matcher, ...]:
        """Every target matcher (target_match, target_match_re, target_matchers)."""
        return _legacy_matchers(self.target_match, self.target_match_re, self.target_matchers)


class RunbookConfig(Strict):
    """One `runbooks` entry: alerts it matches get these runbook and dashboard URL templates."""

    matchers: list[MatcherLine] = Field(min_length=1)
    runbook_url: TemplateStr | None = None
    dashboard_url: TemplateStr | None = None

    def all_matchers(self) -> tuple[Matcher, ...]:
        """This entry's matchers as one tuple."""
        return _legacy_matchers({}, {}, self.matchers)


class RouterConfig(Strict):
    """A whole routes.yaml, validated; `source` and `base_dir` say where it was read from."""

    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    templates: TemplatesConfig = TemplatesConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    chatops: ChatopsConfig = ChatopsConfig()
    receivers: list[ReceiverConfig] = Field(min_length=1)
    route: RouteConfig
    inhibit_rules: list[InhibitRuleConfig] = Field(default_factory=list)
    runbooks: list[RunbookConfig] = Field(default_factory=list)
    # Where the file was read from: relative paths in it are relative to its folder.
    source: str = Field(default="<memory>", exclude=True)
    base_dir: str = Field(default=".", exclude=True)

    def receiver(self, name: str) -> ReceiverConfig:
        """The receiver named `name`; KeyError if there is none."""
        return self._receivers_by_name()[name]

    def _receivers_by_name(self) -> dict[str, ReceiverConfig]:
        return {r.name: r for r in self.receivers}

    def resolve_path(self, path: str) -> Path:
        """`path` as written in the config: relative to the config file's folder."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p
