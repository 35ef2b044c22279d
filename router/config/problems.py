"""What is wrong in a routes.yaml, said well: key paths, did-you-mean, checks across keys, notes.

Every problem becomes a ConfigProblem (file:line: key.path: message) in router/config/load.py;
this module words the messages (dagster-io/dagster `_utils/pydantic_yaml.py` maps pydantic's
`loc` to lines the same way).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from router.channels import template_parts
from router.config.model import RouteConfig, RouterConfig
from router.config.types import WithSecrets

# Keys of earlier versions, by key path: each is refused with why it went and what to do.
REMOVED_KEYS = {
    "server.intake_process": "removed: alert-router now runs as one process, which answers "
    "webhooks itself; delete this key",
}


def format_path(loc: tuple[Any, ...]) -> str:
    """A pydantic `loc` as the key path users read: ("route", "routes", 2) -> route.routes[2]."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _misspelled_templates(folder: Path) -> list[str]:
    """Notes for templates.directory's folders and files that replace nothing and are close to
    a channel folder or part name (a typo: the shipped template is used instead). Folders and
    files close to no name (macros to include) are left alone."""
    if not folder.is_dir():
        return []  # a problem of its own (Renderer.problems)
    notes = []
    parts = template_parts()
    kinds = sorted({key.split("/")[0] for key in parts})
    for sub in sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in kinds):
        close = difflib.get_close_matches(sub, kinds, n=1)
        if close:
            notes.append(
                f"templates.directory: {sub}/ is no channel's folder (did you mean {close[0]}/?):"
                " its templates replace no shipped one"
            )
    for key, names in sorted(parts.items()):
        for file in sorted((folder / key).glob("*.j2")):
            part = file.name.split(".", 1)[0]
            close = difflib.get_close_matches(part, sorted(names), n=1)
            if part not in names and close:
                notes.append(
                    f"templates.directory: {key}/{file.name} replaces no shipped template"
                    f" (did you mean {key}/{close[0]}…?)"
                )
    return sorted(notes)


def config_notes(cfg: RouterConfig) -> list[str]:
    """What check-config should mention: no server.auth (the webhook and the read API open),
    keys accepted for compatibility but not used, open ack lists, template files whose folder
    or name looks misspelled, and storage.synchronous set beside storage.url (SQLite's;
    PostgreSQL ignores it)."""
    notes: list[str] = []
    auth = cfg.server.auth
    if auth.bearer_token is None and auth.basic_auth is None:
        notes.append(
            f"server.auth: not set, so anyone who reaches {cfg.server.listen} may post alerts"
            " and read the API (set bearer_token or basic_auth unless the network is private)"
        )

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
    if cfg.templates.directory is not None:
        notes += _misspelled_templates(cfg.resolve_path(cfg.templates.directory))
    if cfg.storage.url is not None and "synchronous" in cfg.storage.model_fields_set:
        notes.append(
            "storage.synchronous: ignored with storage.url"
            " (PostgreSQL's synchronous_commit applies)"
        )
    return notes


def cross_check(data: Mapping[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Checks across keys (receiver names, the root route) as (loc, message) pairs.

    They run on the raw document, so that they are reported together with any schema errors
    rather than in a second round. The root route's rules are Alertmanager's
    (config/config.go `Config.UnmarshalYAML`).
    """
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


def expected_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at loc[:-1] accepts (for "did you mean"), by walking the annotations
    from RouterConfig; [] where loc does not lead to a model."""
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


def message(err: Mapping[str, Any], expected: list[str]) -> str:
    """The message for one pydantic error (`ValidationError.errors()` item): what is wrong and
    what was expected, never a secret's value. `expected` lists the keys allowed there."""
    kind: str = err["type"]
    msg: str = err["msg"]
    if kind == "extra_forbidden":
        removed = REMOVED_KEYS.get(format_path(err["loc"]))
        if removed is not None:
            return removed
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
