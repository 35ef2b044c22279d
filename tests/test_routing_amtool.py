"""Differential test: our route walk against Debian's real amtool on generated trees and labels."""

from __future__ import annotations

import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.config import parse_config
from router.routing import Route, match_receivers

pytestmark = pytest.mark.amtool

NAMES = ["severity", "service", "env", "team", "component"]
VALUES = [
    "critical",
    "warning",
    "info",
    "api",
    "web",
    "db",
    "prod",
    "prod-eu",
    "staging",
    "a b",
    "x.y",
    "API",
    "é",
    "ab\nc",
]
PATTERNS = [
    "api|web",
    ".*",
    ".+",
    "prod.*",
    "[[:alpha:]]+",
    r"\w+",
    "crit.*|warn.*",
    "(api)?",
    "staging|",
    "a b",
    r"x\.y",
    "[a-z]+-[a-z]+",
    "p.*d",
    "(?i)api",
    "",
    r"\pL+",
    "db$",
    "^web",
    "[^a-z]+",
    "a.c",
    "info|",
]
TREES = 60
LABELSETS_PER_TREE = 20  # 1,200 cases


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def random_matchers(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    style = rng.random()
    if style < 0.15:
        out["match"] = {rng.choice(NAMES): rng.choice(VALUES[:10])}
    elif style < 0.3:
        out["match_re"] = {rng.choice(NAMES): rng.choice(PATTERNS)}
    else:
        lines = []
        for _ in range(rng.choice([1, 1, 1, 2])):
            op = rng.choice(["=", "!=", "=~", "!~"])
            value = rng.choice(PATTERNS) if "~" in op else rng.choice([*VALUES, ""])
            lines.append(f"{rng.choice(NAMES)}{op}{quote(value)}")
        if len(lines) == 2 and rng.random() < 0.5:
            lines = ["{" + ", ".join(lines) + "}"]  # several matchers in one string
        out["matchers"] = lines
    return out


def random_route(rng: random.Random, depth: int, counter: list[int]) -> dict[str, Any]:
    route: dict[str, Any] = random_matchers(rng)
    counter[0] += 1
    if rng.random() < 0.8:  # else inherit the parent's receiver
        route["receiver"] = f"r{counter[0] % 7}"  # names repeat, as real trees' do
    if rng.random() < 0.35:
        route["continue"] = True
    if depth < 3 and rng.random() < 0.45:
        route["routes"] = [random_route(rng, depth + 1, counter) for _ in range(rng.randint(1, 3))]
    return route


def random_tree(rng: random.Random) -> dict[str, Any]:
    counter = [0]
    return {
        "route": {
            "receiver": "root",
            "routes": [random_route(rng, 1, counter) for _ in range(rng.randint(1, 4))],
        },
        "receivers": [{"name": "root"}] + [{"name": f"r{i}"} for i in range(7)],
    }


def random_labels(rng: random.Random) -> dict[str, str]:
    names = rng.sample(NAMES, rng.randint(0, len(NAMES)))
    return {n: rng.choice([v for v in VALUES if "\n" not in v]) for n in names}


def amtool_receivers(amtool: str, config: Path, labels: dict[str, str]) -> str:
    args = [amtool, "config", "routes", "test", f"--config.file={config}"]
    args += [f"{k}={v}" for k, v in labels.items()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def test_route_walk_agrees_with_amtool(amtool: str, tmp_path: Path) -> None:
    rng = random.Random(20261123)
    cases: list[tuple[Path, Route, dict[str, str]]] = []
    for t in range(TREES):
        tree = random_tree(rng)
        path = tmp_path / f"tree{t}.yml"
        path.write_text(yaml.safe_dump(tree, allow_unicode=True))
        root = Route.from_config(parse_config(path.read_text(), file=str(path)).route)
        cases += [(path, root, random_labels(rng)) for _ in range(LABELSETS_PER_TREE)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        theirs = list(pool.map(lambda c: amtool_receivers(amtool, c[0], c[2]), cases))

    mismatches = []
    for (path, root, labels), expected in zip(cases, theirs, strict=True):
        ours = ",".join(match_receivers(root, labels))
        if ours != expected:
            mismatches.append(f"{path.name} {labels}: amtool {expected!r}, ours {ours!r}")
    assert len(cases) >= 1000
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ:\n" + "\n".join(
        mismatches[:20]
    )
