"""Route tree walk as Alertmanager does it (dispatch/route.go): depth-first, `continue`, explain.

An alert enters at the root, which matches every alert. At each route whose matchers all match,
the children are tried in order; the first child that matches stops the search among its
siblings unless it has `continue: true`. The alert ends at the deepest routes that matched, or
at the route itself when no child did (prometheus/alertmanager `dispatch/route.go` Route.Match;
`amtool config routes test` prints the same receivers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from router.config import RouteConfig
from router.matchers import Matcher, format_matchers


@dataclass(frozen=True)
class Route:
    """A compiled route; `receiver` is already inherited from the parent where unset.

    `matchers` are those of `matchers:` and of the deprecated `match:`/`match_re:`, all of which
    must match; `routes` are the children in routes.yaml order. Frozen, built once per config
    load by `from_config`, which raises nothing: the config's validators compiled the matchers.
    """

    path: str  # "route.routes[1].routes[0]": where it stands in routes.yaml
    receiver: str
    matchers: tuple[Matcher, ...]
    continue_: bool
    routes: tuple[Route, ...] = field(default=())

    @classmethod
    def from_config(cls, cfg: RouteConfig, parent_receiver: str = "", path: str = "route") -> Route:
        """The compiled tree under `cfg`, whose place in routes.yaml is `path`."""
        receiver = cfg.receiver or parent_receiver
        children = tuple(
            cls.from_config(c, receiver, f"{path}.routes[{i}]") for i, c in enumerate(cfg.routes)
        )
        return cls(path, receiver, cfg.all_matchers(), cfg.continue_, children)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True if every matcher of this route (not its children) matches `labels`."""
        return all(m.matches(labels) for m in self.matchers)

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes an alert with `labels` ends at, in tree order (Route.Match in Alertmanager).

        [] if this route does not match; otherwise at least one route, this one when no child
        matches. A receiver may appear more than once (two routes, one receiver).
        """
        if not self.matches(labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            matched = child.match(labels)
            found.extend(matched)
            if matched and not child.continue_:
                break
        return found or [self]

    def describe(self) -> str:
        """`path {matchers}` and `continue` if set, e.g. `route.routes[0] {team="db"}  continue`."""
        text = format_matchers(self.matchers) if self.matchers else "(matches all)"
        return f"{self.path} {text}" + ("  continue" if self.continue_ else "")


def match_receivers(root: Route, labels: Mapping[str, str]) -> list[str]:
    """Receiver names in the order amtool `config routes test` prints them (duplicates kept)."""
    return [r.receiver for r in root.match(labels)]


def explain(root: Route, labels: Mapping[str, str]) -> list[str]:
    """The walk, step by step: which routes matched, which did not and why, where it stopped.

    One line per step, indented two spaces per depth: `✓ <route>: receiver r`, `✗ <route>: no
    match: <matcher> (label name='value')`, a note on later siblings not tried, and where the
    alert ends (`→ leaf: sends to r`), as `alert-router routes test --explain` prints them.
    """
    lines: list[str] = []

    def walk(route: Route, depth: int) -> list[Route]:
        pad = "  " * depth
        failed = [m for m in route.matchers if not m.matches(labels)]
        if failed:
            why = ", ".join(f"{m} (label {m.name}={labels.get(m.name, '')!r})" for m in failed)
            lines.append(f"{pad}✗ {route.describe()}: no match: {why}")
            return []
        lines.append(f"{pad}✓ {route.describe()}: receiver {route.receiver}")
        found: list[Route] = []
        for i, child in enumerate(route.routes):
            matched = walk(child, depth + 1)
            found.extend(matched)
            if matched and not child.continue_:
                skipped = len(route.routes) - i - 1
                if skipped:
                    lines.append(
                        f"{pad}  … {skipped} later sibling(s) not tried: {child.path} matched "
                        "without continue"
                    )
                break
        if not found:
            if route.routes:
                lines.append(f"{pad}  → no child matched: {route.path} sends to {route.receiver}")
            else:
                lines.append(f"{pad}  → leaf: sends to {route.receiver}")
            return [route]
        return found

    walk(root, 0)
    return lines
