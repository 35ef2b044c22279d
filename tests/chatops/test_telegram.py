"""/ack from Telegram: updates posted to /telegram/webhook (or fetched by long polling) as Telegram
sends them; replies and edits land on the fake Bot API; Slack and PagerDuty follow the ack."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from router.app import ROLE
from router.chatops.commands import HELP
from router.chatops.telegram import TELEGRAM_BOT

from ..harness import AUTH, Client, Fakes, firing_payload, post, postgres_client, settled, until

SECRET = "hook-s3cret"
RECEIVERS = """
  - name: main
    telegram_configs: [{bot_token: "123456:good-token", chat_id: 1001, api_url: TELEGRAM}]
    slack_configs: [{bot_token: xoxb-good, channel: "#alerts", api_url: SLACK}]
    pagerduty_configs: [{routing_key: R0UTINGKEY0000000000000000000000, url: PAGERDUTY}]
"""
CHATOPS = f"""
chatops:
  telegram:
    bot_token: "123456:good-token"
    api_url: TELEGRAM
    mode: MODE
    webhook_secret: {SECRET}
    allowed_chats: [1001, -1002]
    allowed_users: [42, 77]
"""
ALICE = {"id": 42, "is_bot": False, "first_name": "Alice", "username": "alice"}
MALLORY = {"id": 666, "is_bot": False, "first_name": "Mallory", "username": "mallory"}
CAROL = {"id": 77, "is_bot": False, "first_name": "Carol", "username": "carol"}


def chat(chat_id: int) -> dict[str, Any]:
    return {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private", "title": "On-call"}


def command(
    text: str, user: dict[str, Any], chat_id: int = -1002, reply_to: int | None = None
) -> dict[str, Any]:
    word = text.split()[0]
    message: dict[str, Any] = {
        "message_id": int(time.time() * 1000) % 1_000_000,
        "date": int(time.time()),
        "chat": chat(chat_id),
        "from": user,
        "text": text,
        "entities": [{"type": "bot_command", "offset": 0, "length": len(word)}],
    }
    if reply_to is not None:
        message["reply_to_message"] = {
            "message_id": reply_to,
            "date": int(time.time()),
            "chat": chat(chat_id),
            "text": "alert",
        }
    return {"message": message}


def button(data: str, user: dict[str, Any], chat_id: int = 1001) -> dict[str, Any]:
    return {
        "callback_query": {
            "id": f"cq{time.monotonic_ns()}",
            "from": user,
            "chat_instance": "42",
            "data": data,
            "message": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": chat(chat_id),
                "text": "alert",
            },
        }
    }


async def deliver(client: Client, update: dict[str, Any], secret: str = SECRET) -> int:
    update = {"update_id": int(time.monotonic_ns() % 1_000_000_000), **update}
    resp = await client.post(
        "/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret}
    )
    return resp.status


async def reply_to(fakes: Fakes, chat_id: int, count: int) -> list[str]:
    """The bot's messages to a chat, once there are `count` of them (bounded wait)."""
    for _ in range(200):
        texts = [p["text"] for p in fakes.telegram.sent() if str(p["chat_id"]) == str(chat_id)]
        if len(texts) >= count:
            return texts
        await asyncio.sleep(0.025)
    raise AssertionError(f"expected {count} message(s) to chat {chat_id}, got {texts}")


async def callback_answers(fakes: Fakes, count: int) -> list[dict[str, Any]]:
    """The bot's answers to button presses, once there are `count` of them (bounded wait)."""
    for _ in range(200):
        if len(fakes.telegram.callback_answers) >= count:
            return list(fakes.telegram.callback_answers)
        await asyncio.sleep(0.025)
    raise AssertionError(
        f"expected {count} button answer(s), got {fakes.telegram.callback_answers}"
    )


async def incident_state(client: Client, incident_id: str) -> dict[str, Any]:
    incidents = (await (await client.get("/api/v1/incidents", headers=AUTH)).json())["incidents"]
    found: dict[str, Any] = next(i for i in incidents if i["id"] == incident_id)
    return found


async def test_ack_by_command_updates_every_channel_and_pagerduty(
    fakes: Fakes, make_client: Any
) -> None:
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, RECEIVERS, CHATOPS.replace("MODE", "webhook"))
    incident = (await post(client, firing_payload(2, "ackme")))["incidents"][0]
    await settled(client)

    assert await deliver(client, command(f"/ack {incident} looking at it", ALICE)) == 200
    [answer] = await reply_to(fakes, -1002, 1)
    assert answer == f"✅ #{incident} acknowledged by @alice. Reminders and escalation stop."
    notes = await settled(client)
    assert [n["reason"] for n in notes if n["reason"] == "acked"] == ["acked"] * 3

    state = await incident_state(client, incident)
    assert state["acked_by"] == "@alice" and state["acked_at"]
    assert (state["ack_via"], state["ack_comment"]) == ("telegram:-1002", "looking at it")
    [msg] = [m for m in fakes.telegram.messages.values() if m.chat_id == 1001]
    assert (  # a word joiner after the @: a name from data mentions nobody in the group
        "👤 Acknowledged by @\u2060alice at" in msg.text
        and msg.reply_markup is None
        and msg.edits == 1
    )
    [slack_post] = fakes.slack.posts()
    heading = slack_post.updates[-1]["attachments"][0]["blocks"][0]["text"]["text"]
    assert "Acknowledged by @alice" in heading
    assert [r.payload["text"] for r in fakes.slack.replies()] == [
        f"👤 #{incident} acknowledged by @alice"
    ]
    assert [e["event_action"] for e in fakes.pagerduty.events] == ["trigger", "acknowledge"]

    # A second ack changes nothing and says who acked.
    await deliver(client, command(f"/ack {incident}", CAROL))
    texts = await reply_to(fakes, -1002, 2)
    assert texts[1].startswith(f"#{incident} was already acknowledged by @alice at ")
    # The answer comes after the command's changes are committed: whatever it queued is sent
    # once nothing is queued any more.
    await settled(client)
    assert len(fakes.pagerduty.events) == 2

    # /alerts lists it with its ack; /unack takes it back and the Ack button returns.
    await deliver(client, command("/alerts", ALICE))
    assert (await reply_to(fakes, -1002, 3))[
        2
    ] == f"1 open incident(s):\n#{incident} HighLatency (critical) ×2 · main · acked by @alice"
    await deliver(client, command(f"/unack {incident}", ALICE))
    assert (await reply_to(fakes, -1002, 4))[
        3
    ] == f"↩️ #{incident} is no longer acknowledged (by @alice)."
    await settled(client)
    assert msg.reply_markup is not None and "Acknowledged" not in msg.text
    assert fakes.pagerduty.events[-1]["event_action"] == "trigger"


async def test_ack_by_reply_and_by_button(fakes: Fakes, make_client: Any) -> None:
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, RECEIVERS, CHATOPS.replace("MODE", "webhook"))
    first = (await post(client, firing_payload(1, "byreply")))["incidents"][0]
    second = (await post(client, firing_payload(1, "bybutton")))["incidents"][0]
    await settled(client)
    alert_message = next(m for m in fakes.telegram.messages.values() if f"#{first}" in m.text)

    await deliver(client, command("/ack", CAROL, chat_id=1001, reply_to=alert_message.message_id))
    replies = await reply_to(fakes, 1001, 3)  # two alerts, then the answer
    assert replies[-1] == f"✅ #{first} acknowledged by @carol. Reminders and escalation stop."

    await deliver(client, button(f"ack:{second}", ALICE))
    assert (await callback_answers(fakes, 1))[0]["text"].startswith(
        f"✅ #{second} acknowledged by @alice"
    )
    assert (await incident_state(client, second))["acked_by"] == "@alice"


async def test_refusals_change_nothing(fakes: Fakes, make_client: Any) -> None:
    fakes.telegram.flood_interval_s = 0
    fakes.telegram.chats.add(-1003)
    client = await make_client(fakes, RECEIVERS, CHATOPS.replace("MODE", "webhook"))
    incident = (await post(client, firing_payload(1, "guarded")))["incidents"][0]
    await settled(client)

    assert await deliver(client, command(f"/ack {incident}", ALICE), secret="wrong") == 401
    await deliver(client, command(f"/ack {incident}", ALICE, chat_id=-1003))
    assert (await reply_to(fakes, -1003, 1)) == [
        "Sorry, commands are not accepted from this chat (-1003)."
    ]
    await deliver(client, command(f"/ack {incident}", MALLORY))
    assert (await reply_to(fakes, -1002, 1)) == [
        "Sorry, @mallory (user id 666) is not allowed to acknowledge alerts here."
    ]
    # A username is no credential: Mallory renamed to carol is still Mallory.
    await deliver(client, command(f"/ack {incident}", MALLORY | {"username": "carol"}))
    assert (await reply_to(fakes, -1002, 2))[1] == (
        "Sorry, @carol (user id 666) is not allowed to acknowledge alerts here."
    )
    await deliver(client, button(f"ack:{incident}", MALLORY))
    await deliver(client, command("/ack zzzzz", ALICE))
    assert (await reply_to(fakes, -1002, 3))[
        2
    ] == "No incident #zzzzz. /alerts lists the open ones."
    # Every refusal answered (the button's too), and whatever they queued sent.
    await callback_answers(fakes, 1)
    await settled(client)
    assert (await incident_state(client, incident))["acked_by"] is None
    assert [e["event_action"] for e in fakes.pagerduty.events] == ["trigger"]
    resp = await client.post(
        "/telegram/webhook", data=b"{not json", headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert resp.status == 400


async def test_ack_by_long_polling(fakes: Fakes, make_client: Any) -> None:
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, RECEIVERS, CHATOPS.replace("MODE", "polling"))
    incident = (await post(client, firing_payload(1, "polled")))["incidents"][0]
    await settled(client)
    assert (
        await client.post("/telegram/webhook", json={})
    ).status == 404  # no webhook route in polling mode
    fakes.telegram.push_update(command(f"/ack {incident}", ALICE))
    assert (await reply_to(fakes, -1002, 1))[0].startswith(f"✅ #{incident} acknowledged by @alice")


async def test_telegram_down_at_start_does_not_block_intake(fakes: Fakes, make_client: Any) -> None:
    chatops = CHATOPS.replace("MODE", "webhook").replace("api_url: TELEGRAM", "api_url: REFUSED")
    client = await make_client(fakes, RECEIVERS, chatops)
    answer = await post(client, firing_payload(1, "still-works"))
    assert answer["state"] == "planned"
    assert (
        await deliver(client, command(f"/ack {answer['incidents'][0]}", ALICE)) == 503
    )  # Telegram retries


async def test_ack_alone_and_ack_help_answer_the_usage(fakes: Fakes, make_client: Any) -> None:
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, RECEIVERS, CHATOPS.replace("MODE", "webhook"))
    for _ in range(200):  # 503 until the bot has started (bounded: 5 s)
        if await deliver(client, command("/ack", ALICE)) == 200:
            break
        await asyncio.sleep(0.025)
    await deliver(client, command("/ack help", ALICE))
    bare, help_ = await reply_to(fakes, -1002, 2)
    assert bare.startswith("/ack needs an incident id") and bare.endswith(HELP)
    assert help_ == HELP


async def test_an_update_sent_again_is_not_run_again(fakes: Fakes, make_client: Any) -> None:
    # Telegram sends an update again when its webhook call failed or timed out. Run again, an
    # old /unack took back the ack a colleague had made since.
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, RECEIVERS, CHATOPS.replace("MODE", "webhook"))
    incident = (await post(client, firing_payload(1, "again")))["incidents"][0]
    await settled(client)
    unack = {**command(f"/unack {incident}", ALICE), "update_id": 424242}
    await deliver(client, command(f"/ack {incident}", ALICE))
    await reply_to(fakes, -1002, 1)
    assert await deliver(client, unack) == 200
    await reply_to(fakes, -1002, 2)
    await deliver(client, command(f"/ack {incident}", CAROL))
    await reply_to(fakes, -1002, 3)
    assert await deliver(client, unack) == 200  # answered, so that Telegram stops sending it
    await deliver(client, command("/alerts", ALICE))  # handled after the repeat would have been
    texts = await reply_to(fakes, -1002, 4)
    assert texts[3].endswith("acked by @carol"), texts
    assert (await incident_state(client, incident))["acked_by"] == "@carol"


async def test_an_update_sent_again_to_another_replica_is_not_run_again(
    fakes: Fakes, aiohttp_client: Any, tmp_path: Any, postgres_url: str
) -> None:
    """Behind a load balancer Telegram's second try of an update may reach another replica:
    it is not run again there either (an old /unack took back a later ack: the ids seen were
    each replica's own)."""
    fakes.telegram.flood_interval_s = 0
    chatops = CHATOPS.replace("MODE", "webhook")
    first = await postgres_client(aiohttp_client, fakes, tmp_path, postgres_url, RECEIVERS, chatops)
    second = await postgres_client(
        aiohttp_client, fakes, tmp_path, postgres_url, RECEIVERS, chatops
    )
    incident = (await post(first, firing_payload(1, "again")))["incidents"][0]
    await settled(first)
    for client in (first, second):  # 503 until each bot has started (bounded: 5 s)
        for _ in range(200):
            if await deliver(client, command("/alerts", ALICE)) == 200:
                break
            await asyncio.sleep(0.025)
    await reply_to(fakes, -1002, 2)
    unack = {**command(f"/unack {incident}", ALICE), "update_id": 424243}
    await deliver(first, command(f"/ack {incident}", ALICE))
    await reply_to(fakes, -1002, 3)
    assert await deliver(first, unack) == 200
    await reply_to(fakes, -1002, 4)
    await deliver(first, command(f"/ack {incident}", CAROL))
    await reply_to(fakes, -1002, 5)
    assert await deliver(second, unack) == 200  # answered, so that Telegram stops sending it
    await deliver(second, command("/alerts", ALICE))  # handled after the repeat would have been
    texts = await reply_to(fakes, -1002, 6)
    assert texts[5].endswith("acked by @carol"), texts
    assert (await incident_state(first, incident))["acked_by"] == "@carol"


async def test_long_polling_runs_on_the_planner_replica_only(
    fakes: Fakes, aiohttp_client: Any, tmp_path: Any, postgres_url: str
) -> None:
    """Two replicas in polling mode: only the planner calls getUpdates (each update is taken
    once); when it stops, the other takes over planning and polling, and answers."""
    fakes.telegram.flood_interval_s = 0
    chatops = CHATOPS.replace("MODE", "polling")
    first = await postgres_client(aiohttp_client, fakes, tmp_path, postgres_url, RECEIVERS, chatops)
    second = await postgres_client(
        aiohttp_client, fakes, tmp_path, postgres_url, RECEIVERS, chatops
    )
    bots = [c.app[TELEGRAM_BOT] for c in (first, second)]
    roles = [c.app[ROLE] for c in (first, second)]
    assert roles[0].is_planner and not roles[1].is_planner
    await until(lambda: bots[0].polling and bots[1].app.running)
    assert not bots[1].polling  # started, and waiting to plan
    incident = (await post(first, firing_payload(1, "polled-once")))["incidents"][0]
    fakes.telegram.push_update(command(f"/ack {incident}", ALICE))
    assert (await reply_to(fakes, -1002, 1))[0].startswith(f"✅ #{incident} acknowledged by @alice")

    await first.close()  # the planner stops: the other takes the lease once it expires
    await until(lambda: roles[1].is_planner and bots[1].polling, timeout_s=20)
    fakes.telegram.push_update(command(f"/unack {incident}", ALICE))
    assert (await reply_to(fakes, -1002, 2))[1].startswith(f"↩️ #{incident} is no longer")
