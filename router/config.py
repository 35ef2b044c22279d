"""routes.yaml -> validated pydantic models; every error names file:line and the key path."""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from router.errors import ConfigError, ConfigProblem, MatcherError
from router.matchers import LABEL_NAME_RE, Matcher, MatchType, compile_anchored, parse_matchers

MAX_YAML_NODES = 100_000
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_DURATION_RE = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)

# Jinja2 strings written in routes.yaml run sandboxed: they are config, not code.
TEMPLATE_STRINGS = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)


# ---------------------------------------------------------------- value types


def parse_duration(value: Any) -> timedelta:
    """Alertmanager/Prometheus duration: 30s, 5m, 1h30m, 1d, 1w (model.ParseDuration)."""
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


# Headers the email channel writes itself: a second one makes every mail unbuildable.
OWN_MAIL_HEADERS = frozenset(
    {"subject", "from", "to", "date", "message-id", "in-reply-to", "references"}
    | {"mime-version", "content-type", "content-transfer-encoding"}
)


def _check_mail_header_name(name: str) -> str:
    if not re.fullmatch(r"[!-9;-~]+", name):  # RFC 5322 3.6.8: printable ASCII but ":"
        raise ValueError(f"invalid header name {name!r}: printable ASCII without spaces or ':'")
    if name.lower() in OWN_MAIL_HEADERS:
        raise ValueError(f"{name} is written by alert-router; use another header name")
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
MailHeaderName = Annotated[str, AfterValidator(_check_mail_header_name)]
MatcherLine = Annotated[tuple[Matcher, ...], PlainValidator(_parse_matcher_line)]
Regex = Annotated[str, AfterValidator(_check_regex)]
TemplateStr = Annotated[str, AfterValidator(_check_template)]
ListenAddr = Annotated[str, AfterValidator(_check_listen)]
HostPort = Annotated[str, AfterValidator(_check_hostport)]


class Strict(BaseModel):
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
    """A config block whose `secret_keys` may each be given inline or as `<key>_file`."""

    secret_keys: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: Any, info: ValidationInfo) -> Any:
        return _read_secret_files(data, info, *cls.secret_keys)


# ---------------------------------------------------------------- server and storage


class BasicAuth(WithSecrets):
    secret_keys = ("password",)

    username: str = Field(min_length=1)
    password: SecretStr


class AuthConfig(WithSecrets):
    secret_keys = ("bearer_token",)

    bearer_token: SecretStr | None = None
    basic_auth: BasicAuth | None = None


class ServerConfig(Strict):
    listen: ListenAddr = "0.0.0.0:9095"
    auth: AuthConfig = AuthConfig()
    # far above Alertmanager's largest groups (7,000 alerts: 4.5 MB): it does not retry a 413
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_backlog: int = Field(default=10_000, ge=1)
    shutdown_grace: Duration = timedelta(seconds=10)
    # answer webhooks in a process of their own (router/front.py): a second CPU core for intake
    intake_process: bool = True


class StorageConfig(Strict):
    path: str = "alert-router.db"
    synchronous: Literal["normal", "full"] = "normal"
    stale_after: Duration = timedelta(hours=6)
    retention: Duration = timedelta(days=7)


class DeliveryConfig(Strict):
    max_age: Duration = timedelta(hours=1)
    storm_threshold: int = Field(default=10, ge=2)
    min_backoff: Duration = timedelta(seconds=1)
    max_backoff: Duration = timedelta(minutes=5)


class TemplatesConfig(Strict):
    directory: str | None = None


# ---------------------------------------------------------------- channels


class TelegramConfig(WithSecrets):
    secret_keys = ("bot_token",)

    bot_token: SecretStr
    chat_id: int | str
    message_thread_id: int | None = None
    api_url: str = "https://api.telegram.org"
    disable_notifications: bool = False
    send_resolved: bool | None = None


class SlackConfig(WithSecrets):
    secret_keys = ("bot_token", "webhook_url")

    bot_token: SecretStr | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"
    webhook_url: SecretStr | None = None
    send_resolved: bool | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> SlackConfig:
        if self.webhook_url is not None:
            if self.bot_token is not None:
                raise ValueError("set either webhook_url or bot_token + channel, not both")
        elif self.bot_token is None or not self.channel:
            raise ValueError("needs bot_token and channel (Web API) or webhook_url")
        return self


class EmailConfig(WithSecrets):
    secret_keys = ("auth_password",)

    to: str = Field(min_length=3)
    from_: str = Field(alias="from", min_length=3)
    smarthost: HostPort
    auth_username: str | None = None
    auth_password: SecretStr | None = None
    require_tls: bool = True
    headers: dict[MailHeaderName, str] = Field(default_factory=dict)
    send_resolved: bool | None = None


class PagerDutyConfig(WithSecrets):
    secret_keys = ("routing_key",)

    routing_key: SecretStr
    url: str = "https://events.pagerduty.com/v2/enqueue"
    severity: TemplateStr | None = None
    source: TemplateStr | None = None
    send_resolved: bool | None = None


class EscalateConfig(Strict):
    after: Duration
    to: str = Field(min_length=1)


class ReceiverConfig(Strict):
    name: str = Field(min_length=1)
    send_resolved: bool = True
    repeat_interval: Duration = timedelta(hours=4)
    escalate: EscalateConfig | None = None
    telegram_configs: list[TelegramConfig] = Field(default_factory=list)
    slack_configs: list[SlackConfig] = Field(default_factory=list)
    email_configs: list[EmailConfig] = Field(default_factory=list)
    pagerduty_configs: list[PagerDutyConfig] = Field(default_factory=list)

    def channels(self) -> Iterator[tuple[str, int, BaseModel]]:
        """Each channel config as (kind, index in its list, config)."""
        for kind in ("telegram", "slack", "email", "pagerduty"):
            for i, cfg in enumerate(getattr(self, f"{kind}_configs")):
                yield kind, i, cfg


# ---------------------------------------------------------------- chatops


def _id_checker(pattern: str, what: str, how: str) -> Any:
    """A validator for a chat platform's immutable id; a name gets an error saying how to find
    the id (names can be changed and reused, so they authorize nobody)."""
    compiled = re.compile(pattern)

    def check(value: Any) -> str:
        text = str(value)
        if isinstance(value, bool) or not compiled.fullmatch(text):
            raise ValueError(f"{text!r} is not {what}: names can be changed or reused; {how}")
        return text

    return check


SlackTeamId = Annotated[
    str,
    BeforeValidator(
        _id_checker(
            r"[TE][A-Z0-9]+",
            "a Slack workspace id (T…)",
            "give the id, as in the address of Slack in a browser (app.slack.com/client/T…/)"
            " or in the router's refusal",
        )
    ),
]
SlackChannelId = Annotated[
    str,
    BeforeValidator(
        _id_checker(
            r"[CGD][A-Z0-9]+",
            "a Slack channel id (C…)",
            "give the id, shown at the bottom of the channel's details (About) in Slack",
        )
    ),
]
SlackUserId = Annotated[
    str,
    BeforeValidator(
        _id_checker(
            r"[UW][A-Z0-9]+",
            "a Slack member id (U… or W…)",
            "give the id: in Slack, the user's profile, ⋮, Copy member ID",
        )
    ),
]
TelegramChatId = Annotated[
    int,
    BeforeValidator(
        _id_checker(
            r"-?[1-9][0-9]*",
            "a Telegram chat id (a number, negative for groups)",
            "give the numeric id, which the router's refusal in that chat tells (chat …)",
        )
    ),
]
TelegramUserId = Annotated[
    int,
    BeforeValidator(
        _id_checker(
            r"[1-9][0-9]*",
            "a Telegram user id (a number)",
            "give the numeric id, which the router's refusal tells the user (user id …)",
        )
    ),
]


def _some_places(places: list[Any] | None) -> list[Any] | None:
    if places == []:
        raise ValueError(
            "empty: nobody could ack this receiver's incidents; list ids, or leave the key out"
            " to use the global list"
        )
    return places


class TelegramScope(Strict):
    """Who may ack one receiver's incidents from Telegram; an unset key takes the global one."""

    allowed_chats: Annotated[list[TelegramChatId] | None, AfterValidator(_some_places)] = None
    allowed_users: list[TelegramUserId] | None = None


class TelegramChatops(WithSecrets):
    secret_keys = ("bot_token", "webhook_secret")

    bot_token: SecretStr
    api_url: str = "https://api.telegram.org"
    mode: Literal["webhook", "polling"] = "webhook"
    webhook_secret: SecretStr | None = None
    allowed_chats: list[TelegramChatId] = Field(default_factory=list)
    allowed_users: list[TelegramUserId] = Field(default_factory=list)
    receivers: dict[str, TelegramScope] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> TelegramChatops:
        if self.mode == "webhook" and self.webhook_secret is None:
            raise ValueError(
                "mode webhook needs webhook_secret (checked against X-Telegram-Bot-Api-Secret-Token)"
            )
        if not self.allowed_chats:
            raise ValueError("allowed_chats must list the chat ids that may use /ack")
        return self


class SlackScope(Strict):
    """Who may ack one receiver's incidents from Slack; an unset key takes the global one."""

    allowed_channels: Annotated[list[SlackChannelId] | None, AfterValidator(_some_places)] = None
    allowed_users: list[SlackUserId] | None = None


class SlackChatops(WithSecrets):
    secret_keys = ("bot_token", "signing_secret")

    bot_token: SecretStr | None = None
    api_url: str = "https://slack.com/api/"
    signing_secret: SecretStr
    team_id: SlackTeamId
    allowed_channels: list[SlackChannelId] = Field(min_length=1)
    allowed_users: list[SlackUserId] = Field(default_factory=list)
    receivers: dict[str, SlackScope] = Field(default_factory=dict)


class ChatopsConfig(Strict):
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
        return _legacy_matchers(self.match, self.match_re, self.matchers)


class InhibitRuleConfig(Strict):
    source_match: dict[LabelName, str] = Field(default_factory=dict)
    source_match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    source_matchers: list[MatcherLine] = Field(default_factory=list)
    target_match: dict[LabelName, str] = Field(default_factory=dict)
    target_match_re: dict[LabelName, Regex] = Field(default_factory=dict)
    target_matchers: list[MatcherLine] = Field(default_factory=list)
    equal: list[LabelName] = Field(default_factory=list)

    def sources(self) -> tuple[Matcher, ...]:
        return _legacy_matchers(self.source_match, self.source_match_re, self.source_matchers)

    def targets(self) -> tuple[Matcher, ...]:
        return _legacy_matchers(self.target_match, self.target_match_re, self.target_matchers)


class RunbookConfig(Strict):
    matchers: list[MatcherLine] = Field(min_length=1)
    runbook_url: TemplateStr | None = None
    dashboard_url: TemplateStr | None = None

    def all_matchers(self) -> tuple[Matcher, ...]:
        return _legacy_matchers({}, {}, self.matchers)


class RouterConfig(Strict):
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
        return self._receivers_by_name()[name]

    def _receivers_by_name(self) -> dict[str, ReceiverConfig]:
        return {r.name: r for r in self.receivers}

    def resolve_path(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p


# ---------------------------------------------------------------- loading


def secret_values(model: BaseModel) -> list[str]:
    """Every SecretStr in a config, to keep out of logs."""
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


def load_config(path: str | os.PathLike[str]) -> RouterConfig:
    """Read and validate a routes.yaml; raise ConfigError listing every problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, None, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigProblem(file, None, "", f"not UTF-8 text: {exc.reason}")]
        ) from None
    return parse_config(text, file=file, base_dir=str(Path(path).resolve().parent))


def parse_config(
    text: str, *, file: str = "<memory>", base_dir: str = ".", env: Mapping[str, str] | None = None
) -> RouterConfig:
    doc = _YamlDocument(file, os.environ if env is None else env)
    data = doc.load(text)
    if doc.problems:
        raise ConfigError(doc.problems)
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(file, 1, "", "the document must be a mapping of keys")])
    problems = [doc.problem(loc, msg) for loc, msg in _cross_check(data)]
    data = {**data, "source": file, "base_dir": base_dir}
    try:
        cfg = RouterConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems += [
            doc.problem(e["loc"], _message(e, _expected_keys(e["loc"]))) for e in exc.errors()
        ]
    # An unset ${VAR} is listed with the rest, and once: not again for the "" in its place.
    unset = {p.path for p in doc.unset}
    problems = [p for p in problems if p.path not in unset] + doc.unset
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0))
    return cfg


def config_notes(cfg: RouterConfig) -> list[str]:
    """What check-config should mention: keys accepted for compatibility but not used."""
    notes: list[str] = []

    def walk(route: RouteConfig, path: str) -> None:
        for key in ("group_by", "group_wait", "group_interval", "repeat_interval"):
            if getattr(route, key) is not None:
                extra = " (set repeat_interval on the receiver)" if key == "repeat_interval" else ""
                notes.append(f"{path}.{key}: ignored, Alertmanager does the grouping{extra}")
        for i, child in enumerate(route.routes):
            walk(child, f"{path}.routes[{i}]")

    walk(cfg.route, "route")
    for platform, places, section in (
        ("telegram", "chats", cfg.chatops.telegram),
        ("slack", "channels", cfg.chatops.slack),
    ):
        if section is not None and not section.allowed_users:
            notes.append(
                f"chatops.{platform}.allowed_users: empty, so anyone in allowed_{places} may ack"
                " (list user ids to narrow it)"
            )
    return notes


def _cross_check(data: Mapping[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Checks across keys (receiver names, the root route), on the raw document, so that they are
    reported together with any schema errors rather than in a second round."""
    receivers = data.get("receivers")
    receivers = receivers if isinstance(receivers, list) else []
    seen: dict[str, int] = {}
    for i, r in enumerate(receivers):
        name = r.get("name") if isinstance(r, dict) else None
        if not isinstance(name, str) or not name:
            continue
        if name in seen:
            yield (
                ("receivers", i, "name"),
                f"duplicate receiver name {name!r} (first at receivers[{seen[name]}])",
            )
        seen.setdefault(name, i)
    known = ", ".join(seen)
    for i, r in enumerate(receivers):
        escalate = r.get("escalate") if isinstance(r, dict) else None
        target = escalate.get("to") if isinstance(escalate, dict) else None
        if isinstance(target, str) and seen:
            if target not in seen:
                yield (
                    ("receivers", i, "escalate", "to"),
                    f"undefined receiver {target!r} (known: {known})",
                )
            elif target == r.get("name"):
                yield ("receivers", i, "escalate", "to"), "a receiver cannot escalate to itself"
    chatops = data.get("chatops")
    for platform in ("telegram", "slack"):
        section = chatops.get(platform) if isinstance(chatops, dict) else None
        scoped = section.get("receivers") if isinstance(section, dict) else None
        for name in scoped if isinstance(scoped, dict) and seen else ():
            if name not in seen:
                yield (
                    ("chatops", platform, "receivers", name),
                    f"undefined receiver {name!r} (known: {known})",
                )
    root = data.get("route")
    if not isinstance(root, dict):
        return
    if not root.get("receiver"):
        yield ("route", "receiver"), "the root route must name a receiver"
    key = next((k for k in ("matchers", "match", "match_re") if root.get(k)), None)
    if key is not None:
        yield ("route", key), "the root route must not have any matchers (it matches every alert)"
    if root.get("continue") is True:
        yield ("route", "continue"), "the root route cannot have continue set"

    def walk(
        route: Mapping[str, Any], loc: tuple[Any, ...]
    ) -> Iterator[tuple[tuple[Any, ...], str]]:
        receiver = route.get("receiver")
        if isinstance(receiver, str) and receiver and seen and receiver not in seen:
            yield (*loc, "receiver"), f"undefined receiver {receiver!r} (known: {known})"
        children = route.get("routes")
        for i, child in enumerate(children if isinstance(children, list) else []):
            if isinstance(child, dict):
                yield from walk(child, (*loc, "routes", i))

    yield from walk(root, ("route",))


def _expected_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at loc[:-1] accepts (for "did you mean"), by walking the annotations."""
    node: Any = RouterConfig
    for part in loc[:-1]:
        while get_origin(node) in (list, dict, Union, UnionType) or get_origin(node) is Annotated:
            args = [a for a in get_args(node) if a is not type(None)]
            node = args[-1] if get_origin(node) is not Annotated else args[0]
        if isinstance(part, str):
            if not (isinstance(node, type) and issubclass(node, BaseModel)):
                return []
            field = node.model_fields.get(part) or next(
                (f for f in node.model_fields.values() if f.alias == part), None
            )
            if field is None:
                return []
            node = field.annotation
    while get_origin(node) in (list, Union, UnionType):
        node = [a for a in get_args(node) if a is not type(None)][-1]
    if isinstance(node, type) and issubclass(node, BaseModel):
        keys = [
            f.alias or n for n, f in node.model_fields.items() if n not in ("source", "base_dir")
        ]
        if issubclass(node, WithSecrets):
            keys += [f"{k}_file" for k in node.secret_keys]
        return keys
    return []


def _message(err: Mapping[str, Any], expected: list[str]) -> str:
    kind: str = err["type"]
    msg: str = err["msg"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        channels = [k for k in expected if k.endswith("_configs")]
        if key.endswith("_configs") and channels:
            return (
                f"unknown key: alert-router has no {key}; it delivers through {', '.join(channels)}"
            )
        close = difflib.get_close_matches(str(err["loc"][-1]), expected, n=1)
        if close:
            return f"unknown key (did you mean {close[0]!r}?)"
        return (
            f"unknown key (expected one of: {', '.join(expected)})" if expected else "unknown key"
        )
    if kind == "missing":
        return "required key is missing"
    value = err.get("input")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping of keys, got {_kind_of(value)}"
    if kind == "list_type":
        return f"expected a list, got {_kind_of(value)}"
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if err["loc"] and str(err["loc"][-1]) in _secret_keys():
        # Never the value of a secret, whatever its type (a password YAML read as a number).
        return f"{msg} (value not shown: a secret; quote it in YAML to keep it a string)"
    if kind not in ("value_error", "assertion_error") and isinstance(
        value, str | int | float | bool
    ):
        return f"{msg}, got {value!r}"
    return msg


@functools.cache
def _secret_keys() -> frozenset[str]:
    """The key names of every secret in the config, inline and as `<key>_file`."""
    found: set[str] = set()
    todo: list[type[WithSecrets]] = [WithSecrets]
    while todo:
        cls = todo.pop()
        found.update(cls.secret_keys)
        todo.extend(cls.__subclasses__())
    return frozenset(found | {f"{k}_file" for k in found})


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"


def format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class _YamlDocument:
    """YAML -> plain data plus the line of every key path; duplicate keys and bombs are errors."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.lines: dict[tuple[Any, ...], int] = {}
        self.problems: list[ConfigProblem] = []
        self.unset: list[ConfigProblem] = []  # each unset ${VAR}, where it is used
        self._budget = MAX_YAML_NODES

    def problem(self, loc: tuple[Any, ...], message: str) -> ConfigProblem:
        loc = tuple(
            p for p in loc if isinstance(p, int | str) and p not in ("[key]", "source", "base_dir")
        )
        line = None
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                line = self.lines[loc[:n]]
                break
        return ConfigProblem(self.file, line, format_path(loc), message)

    def load(self, text: str) -> Any:
        try:
            loader = yaml.SafeLoader(text)
        except yaml.YAMLError as exc:  # the reader refuses control characters at once
            self.problems.append(ConfigProblem(self.file, None, "", f"invalid YAML: {exc}"))
            return None
        try:
            node = loader.get_single_node()
            if node is None:
                self.problems.append(ConfigProblem(self.file, 1, "", "the file is empty"))
                return None
            return self._build(node, (), loader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            what = " ".join(p for p in (exc.context, exc.problem) if p)
            self.problems.append(ConfigProblem(self.file, line, "", f"invalid YAML: {what}"))
        except yaml.YAMLError as exc:
            self.problems.append(ConfigProblem(self.file, None, "", f"invalid YAML: {exc}"))
        except RecursionError:
            self.problems.append(
                ConfigProblem(self.file, None, "", "invalid YAML: nested too deeply")
            )
        except _TooLarge:
            self.problems.append(
                ConfigProblem(
                    self.file,
                    None,
                    "",
                    f"the document expands to more than {MAX_YAML_NODES} values (alias bomb?)",
                )
            )
        finally:
            loader.dispose()
        return None

    def _build(self, node: yaml.Node, loc: tuple[Any, ...], loader: yaml.SafeLoader) -> Any:
        self._budget -= 1
        if self._budget < 0:
            raise _TooLarge
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            own: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = loader.construct_object(key_node)
                if not isinstance(key, str | int | float | bool):
                    continue  # reported below ("a key must be a plain value")
                if key in own:
                    self.problems.append(
                        ConfigProblem(
                            self.file,
                            key_node.start_mark.line + 1,
                            format_path((*loc, key)),
                            f"duplicate key (first at line {own[key]})",
                        )
                    )
                own.setdefault(key, key_node.start_mark.line + 1)
            loader.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node)
                if not isinstance(key, str | int | float | bool):
                    self.problems.append(
                        ConfigProblem(
                            self.file,
                            key_node.start_mark.line + 1,
                            format_path(loc),
                            "a key must be a plain value",
                        )
                    )
                    continue
                self.lines[(*loc, key)] = key_node.start_mark.line + 1
                out[key] = self._build(value_node, (*loc, key), loader)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._build(item, (*loc, i), loader) for i, item in enumerate(node.value)]
        value = loader.construct_object(node)
        if isinstance(value, str) and "$" in value:
            value = self._substitute(value, loc, node.start_mark.line + 1)
        return value

    def _substitute(self, value: str, loc: tuple[Any, ...], line: int) -> str:
        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in self.env and (self.env[name] or default is None):
                return self.env[name]
            if default is not None:
                return default
            self.unset.append(
                ConfigProblem(
                    self.file,
                    line,
                    format_path(loc),
                    f"environment variable {name} is not set (write ${{{name}:-default}} for a default)",
                )
            )
            return ""

        return _ENV_RE.sub(repl, value)


class _TooLarge(Exception):
    pass
