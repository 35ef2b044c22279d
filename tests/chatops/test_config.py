"""The chatops section of routes.yaml: ids only, each name refused at load with file:line and how
to find the id; per-receiver lists name known receivers; check-config notes open allow-lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.config import config_notes, load_config, parse_config
from router.errors import ConfigError

from ..helpers import ROOT

BASE = """receivers: [{name: main}, {name: db}]
route: {receiver: main}
chatops:
"""


def problems(chatops: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + chatops, file="r.yaml")
    return [str(p) for p in caught.value.problems]


def test_names_are_refused_with_where_and_how_to_find_the_id() -> None:
    assert problems("""  slack:
    signing_secret: s
    team_id: example
    allowed_channels: ["#alerts", C0ALERTS]
    allowed_users: ["@bob"]
    receivers: {db: {allowed_channels: [db-alerts]}}
  telegram:
    bot_token: "1:t"
    mode: polling
    allowed_chats: ["@oncall"]
    allowed_users: [42, carol]
""") == [
        "r.yaml:6: chatops.slack.team_id: 'example' is not a Slack workspace id (T…): names can be"
        " changed or reused; give the id, as in the address of Slack in a browser"
        " (app.slack.com/client/T…/) or in the router's refusal",
        "r.yaml:7: chatops.slack.allowed_channels[0]: '#alerts' is not a Slack channel id (C…):"
        " names can be changed or reused; give the id, shown at the bottom of the channel's"
        " details (About) in Slack",
        "r.yaml:8: chatops.slack.allowed_users[0]: '@bob' is not a Slack member id (U… or W…):"
        " names can be changed or reused; give the id: in Slack, the user's profile, ⋮,"
        " Copy member ID",
        "r.yaml:9: chatops.slack.receivers.db.allowed_channels[0]: 'db-alerts' is not a Slack"
        " channel id (C…): names can be changed or reused; give the id, shown at the bottom of"
        " the channel's details (About) in Slack",
        "r.yaml:13: chatops.telegram.allowed_chats[0]: '@oncall' is not a Telegram chat id (a"
        " number, negative for groups): names can be changed or reused; give the numeric id,"
        " which the router's refusal in that chat tells (chat …)",
        "r.yaml:14: chatops.telegram.allowed_users[1]: 'carol' is not a Telegram user id (a"
        " number): names can be changed or reused; give the numeric id, which the router's"
        " refusal tells the user (user id …)",
    ]


def test_slack_needs_the_workspace_id() -> None:
    assert problems("  slack: {signing_secret: s, allowed_channels: [C1]}\n") == [
        "r.yaml:4: chatops.slack.team_id: required key is missing"
    ]


def test_per_receiver_lists_name_known_receivers() -> None:
    assert problems("""  telegram:
    bot_token: "1:t"
    mode: polling
    allowed_chats: [-100]
    receivers:
      dba: {allowed_users: [7]}
""") == ["r.yaml:9: chatops.telegram.receivers.dba: undefined receiver 'dba' (known: main, db)"]


def test_check_config_notes_an_allow_list_open_to_anyone_in_the_channel() -> None:
    cfg = parse_config(
        BASE
        + """  slack: {signing_secret: s, team_id: T1, allowed_channels: [C1]}
  telegram: {bot_token: "1:t", mode: polling, allowed_chats: [-100], allowed_users: [7]}
"""
    )
    assert [n for n in config_notes(cfg) if n.startswith("chatops.")] == [
        "chatops.slack.allowed_users: empty, so anyone in allowed_channels may ack"
        " (list user ids to narrow it)"
    ]


def test_the_deploy_kits_chatops_block_is_valid_once_uncommented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (ROOT / "deploy" / "alert-router" / "routes.yaml").read_text()
    block = re.search(r"^# chatops:\n(?:#   .*\n)+", text, re.MULTILINE)
    assert block is not None
    text = text.replace(block.group(0), re.sub(r"^# ?", "", block.group(0), flags=re.MULTILINE))
    for name, value in {
        "TELEGRAM_BOT_TOKEN": "1:t",
        "SLACK_SIGNING_SECRET": "s",
        "SLACK_TEAM_ID": "T0123",
    }.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "routes.yaml").write_text(text.replace("/run/secrets/alert_router_token", "tok"))
    (tmp_path / "tok").write_text("t")
    cfg = load_config(tmp_path / "routes.yaml")
    assert cfg.chatops.slack is not None and cfg.chatops.slack.receivers["oncall"].allowed_users


def test_an_empty_per_receiver_place_list_is_refused() -> None:
    assert problems("""  slack:
    signing_secret: s
    team_id: T1
    allowed_channels: [C1]
    receivers: {db: {allowed_channels: []}}
""") == [
        "r.yaml:8: chatops.slack.receivers.db.allowed_channels: empty: nobody could ack this"
        " receiver's incidents; list ids, or leave the key out to use the global list"
    ]
