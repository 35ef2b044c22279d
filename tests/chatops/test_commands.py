"""The platform-free rules: who may act (Policy, by ids), what /ack parses to, and the memory of
signed Slack requests, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.chatops import slack
from router.chatops.commands import HELP, Actor, Allow, Command, Policy, display_name, parse
from router.state import IncidentState

POLICY = Policy(
    "slack",
    "T1",
    Allow(frozenset({"C0ALL", "C0DB"})),
    {"db": Allow(frozenset({"C0DB"}), frozenset({"U0DBA"}))},
)


def actor(user: str, place: str, team: str = "T1") -> Actor:
    return Actor("slack", user, f"@{user.lower()}", place, team)


def incident(receiver: str, escalated_to: str = "") -> IncidentState:
    return IncidentState(
        "k3v9x", receiver, "am", "{}", datetime.now(UTC), escalated_to=escalated_to
    )


@pytest.mark.parametrize(
    ("who", "receiver", "escalated_to", "may"),
    [
        (actor("U0BOB", "C0ALL"), "web", "", True),  # no list of its own: the global one
        (actor("U0BOB", "C0DB"), "db", "", False),  # db's list names its users
        (actor("U0DBA", "C0ALL"), "db", "", False),  # ... and its channels
        (actor("U0DBA", "C0DB"), "db", "", True),
        (actor("U0DBA", "C0DB"), "web", "db", True),  # escalated to db: db's people too
        (actor("U0BOB", "C0ALL"), "web", "db", True),  # ... and still web's
    ],
)
def test_a_receivers_list_decides_who_may_change_its_ack(
    who: Actor, receiver: str, escalated_to: str, may: bool
) -> None:
    assert POLICY.refusal(who) is None
    assert (POLICY.change_refusal(who, incident(receiver, escalated_to)) is None) is may


def test_the_gate_checks_workspace_then_place_then_user() -> None:
    assert POLICY.refusal(actor("U0BOB", "C0ALL", team="T2")) == (
        "Sorry, commands are not accepted from this Slack workspace (T2)."
    )
    assert POLICY.refusal(actor("U0BOB", "C0ELSE")) == (
        "Sorry, commands are not accepted from this channel (C0ELSE)."
    )
    narrow = Policy("telegram", None, Allow(frozenset({"-100"}), frozenset({"42"})))
    assert narrow.refusal(Actor("telegram", "7", "Eve", "-100")) == (
        "Sorry, Eve (user id 7) is not allowed to acknowledge alerts here."
    )


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Alice\u202e\nSmith\tJr", "Alice\u202e Smith Jr"),
        ("\x00\x1b[31m", "[31m"),
        ("", "(no name)"),
        ("x" * 200, "x" * 63 + "…"),
    ],
)
def test_display_names_are_one_bounded_line(text: str, shown: str) -> None:
    assert display_name(text) == shown


@pytest.mark.parametrize("text", ["help", "Help", "--help"])
def test_ack_help_is_the_usage(text: str) -> None:
    assert parse("/ack", text) == Command("help")
    assert "/ack <id> [duration] [comment]" in HELP


def test_seen_requests_expire_with_the_window_and_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_000_000.0]
    seen = slack.SeenRequests(clock=lambda: now[0])
    assert seen.add(1_000_000, "v0=a") is True
    assert seen.add(1_000_000, "v0=a") is False  # a replay
    assert seen.add(1_000_001, "v0=a") is True  # another timestamp: another request
    now[0] += slack.WINDOW.total_seconds() + 2  # both timestamps have left the window: forgotten
    assert seen.add(1_000_001, "v0=a") is True
    monkeypatch.setattr(slack, "MAX_SEEN", 3)  # at the bound, new requests wait (429)
    assert [seen.add(int(now[0]), f"v0={n}") for n in range(4)] == [True, True, True, None]
