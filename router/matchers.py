r"""Alertmanager matcher syntax, parsed as Alertmanager 0.25 does, with fully anchored RE2 regexes.

A matcher is `name op value`, op one of = != =~ !~, the value optionally in double quotes with
the escapes \\, \" and \n; a list is `{a="b", c=~"d"}` with or without the braces. Rules from
prometheus/alertmanager: the grammar and escapes of the classic parser (`pkg/labels/parse.go`,
ParseMatcher and ParseMatchers), the matching and the anchoring of regexes as `^(?:value)$`
(`pkg/labels/matcher.go`, NewMatcher and Matches). Go's regexp is RE2, hence google-re2 here:
the same syntax, linear time, no backreferences. Parse errors raise MatcherError.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

from router.errors import MatcherError

# Alertmanager's own grammar for one matcher (pkg/labels/parse.go); '=~' before '='.
# Go's \s is [\t\n\f\r ] and its $ is end of text, so both are spelled out here.
_MATCHER_RE = re.compile(
    r"^[\t\n\f\r ]*([a-zA-Z_:][a-zA-Z0-9_:]*)[\t\n\f\r ]*(=~|=|!=|!~)[\t\n\f\r ]*(.*?)[\t\n\f\r ]*\Z",
    re.DOTALL,
)
# A label name as Prometheus defines it (data model, "Metric names and labels").
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


class MatchType(enum.Enum):
    """A matcher's operator, valued as written (Alertmanager pkg/labels/matcher.go MatchType)."""

    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


def compile_anchored(pattern: str) -> Any:
    """Compile `pattern` as Alertmanager does: RE2, anchored as ^(?:pattern)$.

    Returns a compiled `re2` pattern (use `.search`). Raises MatcherError naming the user's
    pattern and RE2's complaint about it, e.g.
    `invalid regex "[a-": missing ]`. The pattern is checked alone first: RE2's message about
    the anchored form would describe the wrapper (`[a-` inside `^(?:[a-)$` is a range `a-)`).
    """
    compiled: Any = None
    for candidate in (pattern, f"^(?:{pattern})$"):
        try:
            compiled = re2.compile(candidate, _RE2_OPTIONS)
        except re2.error as exc:
            raw = exc.args[0] if exc.args else str(exc)
            detail = raw.decode() if isinstance(raw, bytes) else str(raw)
            # RE2 ends most messages with the offending part; the whole pattern is quoted already.
            detail = detail.removesuffix(f": {candidate}")
            raise MatcherError(f"invalid regex {_quote(pattern)}: {detail}") from None
    return compiled


@dataclass(frozen=True)
class Matcher:
    r"""One label matcher; a missing label matches as the empty string, as in Alertmanager.

    `value` is unescaped (a newline, not `\n`); `str()` writes the matcher back in the quoted
    form that parse_matcher reads. Build one with `create` (or parse_matcher), which compiles
    the regex: equality compares the three fields, not the compiled pattern.
    """

    name: str
    type: MatchType
    value: str
    _regex: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def create(cls, name: str, type_: MatchType, value: str) -> Matcher:
        """A matcher with its regex compiled (for =~ and !~); raises MatcherError if invalid."""
        regex = compile_anchored(value) if type_ in (MatchType.REGEX, MatchType.NOT_REGEX) else None
        return cls(name, type_, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True if the label set satisfies this matcher (a missing label counts as "")."""
        v = labels.get(self.name, "")
        if self.type is MatchType.EQUAL:
            return v == self.value
        if self.type is MatchType.NOT_EQUAL:
            return v != self.value
        found = self._regex.search(v) is not None
        return found if self.type is MatchType.REGEX else not found

    def __str__(self) -> str:
        return f"{self.name}{self.type.value}{_quote(self.value)}"


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def parse_matcher(text: str) -> Matcher:
    r"""Parse one matcher such as `service=~"api|web"` (quotes optional, as in Alertmanager).

    Whitespace around the name, the operator and the value is ignored; in the value, `\n` is a
    newline, `\"` a quote, `\\` a backslash, and any other backslash stays as written.
    Raises MatcherError: `bad matcher format` (no label name or operator), `unescaped double
    quote`, or `invalid regex` (see compile_anchored).
    """
    m = _MATCHER_RE.match(text)
    if m is None:
        raise MatcherError(f"bad matcher format: {text}")
    name, op, raw = m.group(1), m.group(2), m.group(3)
    expect_trailing_quote = raw.startswith('"')
    if expect_trailing_quote:
        raw = raw[1:]
    value: list[str] = []
    escaped = False
    for i, ch in enumerate(raw):
        if escaped:
            escaped = False
            if ch == "n":
                value.append("\n")
            elif ch in ('"', "\\"):
                value.append(ch)
            else:  # a spurious escape keeps its backslash
                value.append("\\" + ch)
            continue
        if ch == "\\":
            if i < len(raw) - 1:
                escaped = True
                continue
            value.append("\\")
        elif ch == '"':
            if not expect_trailing_quote or i < len(raw) - 1:
                raise MatcherError(f"matcher value contains unescaped double quote: {m.group(3)}")
            expect_trailing_quote = False
        else:
            value.append(ch)
    if expect_trailing_quote:
        raise MatcherError(f"matcher value contains unescaped double quote: {m.group(3)}")
    return Matcher.create(name, MatchType(op), "".join(value))


def parse_matchers(text: str) -> list[Matcher]:
    """Parse `{a="b", c=~"d"}` or `a="b", c=~"d"`: commas inside quotes do not split.

    Returns the matchers in the order written; "" and "{}" give []. A trailing comma is allowed.
    Raises MatcherError for the first matcher that parse_matcher refuses.
    """
    s = text.removeprefix("{").removesuffix("}")
    tokens: list[str] = []
    token: list[str] = []
    inside_quotes = escaped = False
    for ch in s:
        if ch == "," and not inside_quotes:
            tokens.append("".join(token))
            token = []
            continue
        if ch == '"':
            if not escaped:
                inside_quotes = not inside_quotes
            else:
                escaped = False
        elif ch == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(ch)
    last = "".join(token).strip()
    if last:
        tokens.append(last)
    return [parse_matcher(t) for t in tokens]


def all_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True if every matcher matches `labels` (so True for no matchers)."""
    return all(m.matches(labels) for m in matchers)


def format_matchers(matchers: Iterable[Matcher]) -> str:
    """The matchers as amtool prints them: `{a="b", c=~"d"}`; parse_matchers reads it back."""
    return "{" + ", ".join(str(m) for m in matchers) + "}"
