"""Loading routes.yaml: the shipped file, secret files, ${VAR} substitution, empty sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import config_notes, load_config, parse_config

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


def test_check_config_notes_template_files_that_look_misspelled(tmp_path: Path) -> None:
    """A template under a misspelled channel folder or part name replaces nothing, silently:
    check-config says which one and what it was probably meant to be. A folder or file not
    close to any name (shared macros to include) is not mentioned."""
    for name in (
        "telegrm/message.html.j2",
        "slack/mesage.mrkdwn.j2",
        "email/digest/subjct.txt.j2",
        "common/macros.html.j2",
        "slack/macros.mrkdwn.j2",
    ):
        (tmp_path / "t" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "t" / name).write_text("{{ incident.id }}\n")
    (tmp_path / "routes.yaml").write_text(
        "templates: {directory: t}\nreceivers: [{name: d}]\nroute: {receiver: d}\n"
    )
    notes = config_notes(load_config(tmp_path / "routes.yaml"))
    assert [n for n in notes if n.startswith("templates.directory")] == [
        "templates.directory: email/digest/subjct.txt.j2 replaces no shipped template"
        " (did you mean email/digest/subject…?)",
        "templates.directory: slack/mesage.mrkdwn.j2 replaces no shipped template"
        " (did you mean slack/message…?)",
        "templates.directory: telegrm/ is no channel's folder (did you mean telegram/?):"
        " its templates replace no shipped one",
    ]
