"""Reading routes.yaml: YAML with the line of every key, ${VAR} substitution, an alias-bomb guard.

`load_config` and `parse_config` return a validated RouterConfig or raise ConfigError listing
every problem at once, each as `file:line: key.path: message`; then the templates of
`templates.directory`, each problem naming its template file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from router.channels import template_parts
from router.config.model import RouterConfig
from router.config.problems import cross_check, expected_keys, format_path, message
from router.errors import ConfigError, ConfigProblem
from router.render import Renderer

MAX_YAML_NODES = 100_000  # values a document may expand to (aliases counted each time)
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def load_config(path: str | os.PathLike[str]) -> RouterConfig:
    """Read and validate a routes.yaml; raise ConfigError listing every problem.

    Relative paths inside it (secret files, templates.directory, storage.path) are taken
    relative to the file's folder.
    """
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
    """Validate routes.yaml text; raise ConfigError with every problem, sorted by line.

    `file` names the text in messages, `base_dir` anchors relative paths, `env` replaces
    os.environ for ${VAR} substitution.
    """
    doc = YamlDocument(file, os.environ if env is None else env)
    data = doc.load(text)
    if doc.problems:
        raise ConfigError(doc.problems)
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(file, 1, "", "the document must be a mapping of keys")])
    problems = [doc.problem(loc, msg) for loc, msg in cross_check(data)]
    data = {**data, "source": file, "base_dir": base_dir}
    try:
        cfg = RouterConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems += [
            doc.problem(e["loc"], message(e, expected_keys(e["loc"]))) for e in exc.errors()
        ]
    # An unset ${VAR} is listed with the rest, and once: not again for the "" in its place.
    unset = {p.path for p in doc.unset}
    problems = [p for p in problems if p.path not in unset] + doc.unset
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0))
    problems = template_problems(cfg, doc)
    if problems:
        raise ConfigError(problems)
    return cfg


def template_problems(cfg: RouterConfig, doc: YamlDocument) -> list[ConfigProblem]:
    """What is wrong with the templates in `templates.directory`, if set, each naming its file:
    the folder missing, a part a channel needs (router/channels/__init__.py) without a
    template, a template that does not compile or includes one that is not there. Checked at
    load, so that check-config and serve's start refuse them, not a send at 3 a.m."""
    if cfg.templates.directory is None:
        return []
    folder = cfg.resolve_path(cfg.templates.directory)
    if not folder.is_dir():
        return [doc.problem(("templates", "directory"), f"no such folder: {folder}")]
    return Renderer(folder).problems(template_parts())


class YamlDocument:
    """YAML -> plain data plus the line of every key path; duplicate keys and bombs are errors.

    After `load`, `problems` holds what stops the document being read at all, `unset` each
    ${VAR} used but not set (listed with the schema's problems), and `lines` maps key paths
    (tuples of keys and list indexes) to 1-based lines.
    """

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.lines: dict[tuple[Any, ...], int] = {}
        self.problems: list[ConfigProblem] = []
        self.unset: list[ConfigProblem] = []  # each unset ${VAR}, where it is used
        self._budget = MAX_YAML_NODES

    def problem(self, loc: tuple[Any, ...], message: str) -> ConfigProblem:
        """A problem at pydantic `loc`, on the line of its nearest key that the document has."""
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
        """The document as dicts, lists and scalars, or None when `problems` says why not."""
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
        """`${VAR}`, `${VAR:-default}` and `$$` replaced; an unset VAR is noted in `unset`."""

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
