"""/ack from Slack: slash commands and the Acknowledge button, signed as Slack signs them."""

from __future__ import annotations

import asyncio
import functools
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from ..harness import AUTH, Client, Fakes, firing_payload, post, settled
from ..helpers import slack_signed

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
RECEIVERS = """
  - name: main
    slack_configs: [{bot_token: xoxb-good, channel: "#alerts", api_url: SLACK}]
    pagerduty_configs: [{routing_key: R0UTINGKEY0000000000000000000000, url: PAGERDUTY}]
"""
CHATOPS = f"""
chatops:
  slack:
    signing_secret: {SIGNING_SECRET}
    team_id: T000
    allowed_channels: [C0ALERTS, C0DB]
    allowed_users: []
"""


signed = functools.partial(slack_signed, secret=SIGNING_SECRET)


def slash(
    text: str,
    user: str = "bob",
    channel_id: str = "C0ALERTS",
    channel_name: str = "alerts",
    team_id: str = "T000",
    user_id: str | None = None,
) -> bytes:
    return urlencode(
        {
            "token": "deprecated",
            "team_id": team_id,
            "team_domain": "example",
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id or f"U{user.upper()}",
            "user_name": user,
            "command": "/ack",
            "text": text,
            "api_app_id": "A000",
            "response_url": "https://hooks.slack.com/commands/T000/1/x",
            "trigger_id": "1.2.3",
        }
    ).encode()


async def command(
    client: Client, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    resp = await client.post("/slack/commands", data=body, headers=headers or signed(body))
    return resp.status, (await resp.json()) if resp.content_type == "application/json" else None


async def acked_by(client: Client, incident_id: str) -> str | None:
    incidents = (await (await client.get("/api/v1/incidents", headers=AUTH)).json())["incidents"]
    value: str | None = next(i for i in incidents if i["id"] == incident_id)["acked_by"]
    return value


async def test_slash_command_acks_and_answers_in_channel(fakes: Fakes, make_client: Any) -> None:
    client = await make_client(fakes, RECEIVERS, CHATOPS)
    incident = (await post(client, firing_payload(1, "slack")))["incidents"][0]
    await settled(client)
    status, answer = await command(client, slash(f"{incident} disk is filling"))
    assert status == 200
    assert answer == {
        "response_type": "in_channel",
        "text": f"✅ #{incident} acknowledged by @bob. Reminders and escalation stop.",
    }
    await settled(client)
    assert await acked_by(client, incident) == "@bob"
    assert [e["event_action"] for e in fakes.pagerduty.events] == ["trigger", "acknowledge"]
    assert [r.payload["text"] for r in fakes.slack.replies()] == [
        f"👤 #{incident} acknowledged by @bob"
    ]

    status, again = await command(client, slash(incident, user="dave"))
    assert again["response_type"] == "ephemeral" and again["text"].startswith(
        f"#{incident} was already acknowledged by @bob"
    )


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (lambda body: signed(body, secret="not-the-secret"), "wrong secret"),
        (lambda body: signed(body, age_s=6 * 60), "timestamp older than 5 minutes"),
        (lambda body: {"Content-Type": "application/x-www-form-urlencoded"}, "no signature"),
        (lambda body: {**signed(body), "X-Slack-Signature": "v0=" + "0" * 64}, "forged signature"),
    ],
)
async def test_bad_signatures_are_refused(
    fakes: Fakes, make_client: Any, headers: Any, why: str
) -> None:
    client = await make_client(fakes, RECEIVERS, CHATOPS)
    incident = (await post(client, firing_payload(1, "forged")))["incidents"][0]
    body = slash(incident)
    status, _ = await command(client, body, headers(body))
    assert status == 401, why
    assert await acked_by(client, incident) is None


@pytest.mark.parametrize(
    ("where", "refusal"),
    [
        (
            {"channel_id": "C0RANDOM", "channel_name": "alerts"},
            "Sorry, commands are not accepted from this channel (C0RANDOM).",
        ),
        (
            {"team_id": "T0THER"},
            "Sorry, commands are not accepted from this Slack workspace (T0THER).",
        ),
    ],
    ids=["a channel named like an allowed one", "an allowed channel id in another workspace"],
)
async def test_only_allowed_ids_may_act(
    fakes: Fakes, make_client: Any, where: dict[str, str], refusal: str
) -> None:
    client = await make_client(fakes, RECEIVERS, CHATOPS)
    incident = (await post(client, firing_payload(1, "refuse")))["incidents"][0]
    _, answer = await command(client, slash(incident, **where))
    assert answer == {"response_type": "ephemeral", "text": refusal}
    assert await acked_by(client, incident) is None
    _, answer = await command(client, slash(incident, channel_id="C0DB", channel_name="db"))
    assert answer["response_type"] == "in_channel"


async def test_allowed_users_are_member_ids_not_names(fakes: Fakes, make_client: Any) -> None:
    client = await make_client(
        fakes, RECEIVERS, CHATOPS.replace("allowed_users: []", "allowed_users: [U0BOB]")
    )
    incident = (await post(client, firing_payload(1, "byid")))["incidents"][0]
    _, answer = await command(client, slash(incident, user="bob", user_id="U0IMPOSTOR"))
    assert answer["text"] == (
        "Sorry, @bob (user id U0IMPOSTOR) is not allowed to acknowledge alerts here."
    )
    assert await acked_by(client, incident) is None
    _, answer = await command(client, slash(incident, user="robert", user_id="U0BOB"))
    assert answer["text"].startswith(f"✅ #{incident} acknowledged by @robert.")


async def test_a_bad_incident_id_is_answered(fakes: Fakes, make_client: Any) -> None:
    client = await make_client(fakes, RECEIVERS, CHATOPS)
    _, answer = await command(client, slash("not-an-id"))
    assert (
        answer["text"]
        == "'not-an-id' is not an incident id (5 letters and digits, as in the alert message)."
    )


async def test_acknowledge_button(fakes: Fakes, make_client: Any) -> None:
    client = await make_client(fakes, RECEIVERS, CHATOPS)
    incident = (await post(client, firing_payload(1, "button")))["incidents"][0]
    await settled(client)
    [posted] = fakes.slack.posts()
    ack = posted.payload["attachments"][0]["blocks"][-1]["elements"][0]
    payload = {
        "type": "block_actions",
        "team": {"id": "T000", "domain": "example"},
        "user": {"id": "UERIN", "username": "erin", "name": "erin", "team_id": "T000"},
        "channel": {"id": "C0ALERTS", "name": "alerts"},
        "container": {"type": "message", "message_ts": posted.ts},
        "response_url": fakes.urls["slack"] + "/actions/T000/1/response",
        "trigger_id": "1.2.3",
        "actions": [
            {
                "action_id": ack["action_id"],
                "value": ack["value"],
                "type": "button",
                "block_id": "b",
            }
        ],
    }
    body = urlencode({"payload": orjson.dumps(payload).decode()}).encode()
    resp = await client.post("/slack/interactions", data=body, headers=signed(body))
    assert resp.status == 200
    for _ in range(200):
        if fakes.slack.responses:
            break
        await asyncio.sleep(0.025)
    assert fakes.slack.responses == [
        {
            "response_type": "ephemeral",
            "replace_original": False,
            "text": f"✅ #{incident} acknowledged by @erin. Reminders and escalation stop.",
        }
    ]
    await settled(client)
    assert await acked_by(client, incident) == "@erin"
    buttons = posted.updates[-1]["attachments"][0]["blocks"][-1]["elements"]
    assert [b["action_id"] for b in buttons] == [
        "link_runbook",
        "link_silence",
    ]  # no Acknowledge any more


@pytest.mark.parametrize("text", ["help", "HELP", ""])
async def test_ack_help_and_ack_alone_answer_the_usage(
    fakes: Fakes, make_client: Any, text: str
) -> None:
    client = await make_client(fakes, RECEIVERS, CHATOPS)
    _, answer = await command(client, slash(text))
    assert answer["response_type"] == "ephemeral"
    assert "/ack &lt;id&gt; [duration] [comment]" in answer["text"], answer
    assert "/unack &lt;id&gt;" in answer["text"]
