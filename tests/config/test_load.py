"""Loading routes.yaml: the shipped file, secret files, ${VAR} substitution, empty sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import load_config, parse_config

from ..helpers import DATA, ROOT

BAD = DATA / "config"


def test_shipped_routes_yaml_is_valid() -> None:
    cfg = load_config(ROOT / "routes.yaml")
    names = {r.name for r in cfg.receivers}
    assert {"oncall-pager", "team-slack", "team-slack-info", "security"} <= names
    assert len(cfg.inhibit_rules) == 2


def test_secret_file_is_read_relative_to_the_config_and_never_shown() -> None:
    cfg = load_config(BAD / "secret-file.yaml")
    key = cfg.receivers[0].pagerduty_configs[0].routing_key
    assert key.get_secret_value() == "R0UT1NGKEY"
    assert "R0UT1NGKEY" not in repr(cfg)


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${TOKEN}", {"TOKEN": "s3cret"}, "s3cret"),
        ("${TOKEN:-fallback}", {}, "fallback"),
        ("${TOKEN:-fallback}", {"TOKEN": ""}, "fallback"),
        ("${TOKEN}", {"TOKEN": ""}, ""),
        ("pre-${A}-${B:-b}", {"A": "a"}, "pre-a-b"),
        ("cost: $$5", {}, "cost: $5"),
        ("$HOME stays", {}, "$HOME stays"),
    ],
)
def test_environment_substitution(value: str, env: dict[str, str], expected: str) -> None:
    text = f"server: {{auth: {{bearer_token: '{value}'}}}}\nreceivers: [{{name: d}}]\nroute: {{receiver: d}}\n"
    cfg = parse_config(text, env=env)
    token = cfg.server.auth.bearer_token
    assert token is not None
    assert token.get_secret_value() == expected


def test_empty_section_means_defaults(tmp_path: Path) -> None:
    cfg = parse_config(
        "server:\ntemplates:\nreceivers: [{name: d}]\nroute: {receiver: d}\ninhibit_rules:\n"
    )
    assert cfg.server.listen == "0.0.0.0:9095"
    assert cfg.inhibit_rules == []
