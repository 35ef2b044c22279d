"""What chat users type (names, arguments) is escaped for each place it lands and bounded in
length, and a signed Slack request is executed once: a replay inside the 5-minute window is
refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson

from router.app import PLANNER

from ..harness import Client, Fakes, firing_payload, post, settled
from . import test_slack
from .test_race import BOTH, RECEIVERS
from .test_slack import acked_by, command, slash
from .test_telegram import ALICE, button, deliver, incident_state, reply_to
from .test_telegram import command as telegram_command

TELEGRAM_TOO = (
    RECEIVERS
    + """
    telegram_configs: [{bot_token: "123456:good-token", chat_id: 1001, api_url: TELEGRAM}]
"""
)


async def started(fakes: Fakes, make_client: Any, group: str) -> tuple[Client, str]:
    """The app with Slack and Telegram chat-ops, and one incident notified everywhere."""
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, TELEGRAM_TOO, BOTH.replace("ALERTMANAGER", "http://unused"))
    incident = (await post(client, firing_payload(1, group)))["incidents"][0]
    await settled(client)
    return client, incident


async def test_a_name_is_shown_as_text_never_as_a_mention_or_markup(
    fakes: Fakes, make_client: Any
) -> None:
    client, incident = await started(fakes, make_client, "names")
    eve = {"id": 5, "is_bot": False, "first_name": "<!channel> <b>Eve</b>", "last_name": "x\nY"}
    await deliver(client, telegram_command(f"/ack {incident}", eve))
    [answer] = await reply_to(fakes, -1002, 1)
    # Telegram answers are plain text: shown as typed, on one line.
    assert answer.startswith(f"✅ #{incident} acknowledged by <!channel> <b>Eve</b> x Y.")
    await settled(client)
    [note] = [r.payload["text"] for r in fakes.slack.replies()]
    assert note == f"👤 #{incident} acknowledged by &lt;!channel&gt; &lt;b&gt;Eve&lt;/b&gt; x Y"
    [message] = [m for m in fakes.telegram.messages.values() if m.chat_id == 1001]
    assert "Acknowledged by &lt;!channel&gt; &lt;b&gt;Eve&lt;/b&gt; x Y at" in message.text

    # Slack answers are mrkdwn: escaped, so the channel sees the name and nobody is pinged.
    other = (await post(client, firing_payload(1, "names2")))["incidents"][0]
    _, reply = await command(client, slash(other, user="<!here|here>"))
    assert reply["response_type"] == "in_channel"
    assert reply["text"].startswith(f"✅ #{other} acknowledged by @&lt;!here|here&gt;.")


async def test_names_and_echoed_words_are_bounded(fakes: Fakes, make_client: Any) -> None:
    client, incident = await started(fakes, make_client, "long")
    long_name = {"id": 6, "is_bot": False, "first_name": "A" * 64, "last_name": "B" * 64}
    await deliver(client, telegram_command(f"/ack {'z' * 4090}", long_name))
    [refused] = await reply_to(fakes, -1002, 1)
    assert (
        refused
        == f"'{'z' * 39}…' is not an incident id (5 letters and digits, as in the alert message)."
    )
    await deliver(client, telegram_command(f"/ack {incident}", long_name))
    answer = (await reply_to(fakes, -1002, 2))[1]
    assert answer.startswith(f"✅ #{incident} acknowledged by {'A' * 63}….")
    assert (await incident_state(client, incident))["acked_by"] == "A" * 63 + "…"


async def test_a_replayed_slack_request_is_refused(fakes: Fakes, make_client: Any) -> None:
    client = await make_client(fakes, RECEIVERS, test_slack.CHATOPS)
    incident = (await post(client, firing_payload(1, "replay")))["incidents"][0]
    ack, unack = slash(incident), slash(incident).replace(b"%2Fack", b"%2Funack")
    ack_headers, unack_headers = test_slack.signed(ack), test_slack.signed(unack)
    assert (await command(client, ack, ack_headers))[1]["text"].startswith("✅")
    assert (await command(client, unack, unack_headers))[1]["text"].startswith("↩️")
    for body, headers in ((ack, ack_headers), (unack, unack_headers)):
        status, answer = await command(client, body, headers)
        assert status == 401, answer
    assert await acked_by(client, incident) is None
    # The same body signed again (another timestamp) is a new request.
    again = test_slack.signed(ack, age_s=2)
    assert (await command(client, ack, again))[1]["text"].startswith("✅")


async def test_a_long_alerts_list_still_reaches_telegram(fakes: Fakes, make_client: Any) -> None:
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, TELEGRAM_TOO, BOTH.replace("ALERTMANAGER", "http://unused"))
    store = client.app[PLANNER]
    now = datetime.now(UTC)
    for n in range(32):
        payload = orjson.loads(firing_payload(1, f"many{n}", severity="s" * 30))
        payload["commonLabels"]["alertname"] = "DiskWillFillIn4Hours" * 5
        incident = (await post(client, orjson.dumps(payload)))["incidents"][0]
        await store.set_ack(incident, None, "W" * 64, now, f"c{n}")
    await deliver(client, telegram_command("/alerts", ALICE))
    [answer] = await reply_to(fakes, -1002, 1)
    assert answer.startswith("32 open incident(s):\n#") and answer.endswith("…")
    assert len(answer.encode("utf-16-le")) // 2 == 4096


async def test_a_button_value_is_checked_as_a_typed_id(fakes: Fakes, make_client: Any) -> None:
    client, incident = await started(fakes, make_client, "button")
    await deliver(client, button("ack:" + "<z>" * 100, ALICE, chat_id=-1002))
    for _ in range(200):  # bounded: 5 s
        if fakes.telegram.callback_answers:
            break
        await asyncio.sleep(0.025)
    [answer] = fakes.telegram.callback_answers
    assert answer["text"] == (
        f"'{'<z>' * 13}…' is not an incident id (5 letters and digits, as in the alert message)."
    )
    assert (await incident_state(client, incident))["acked_by"] is None
