"""Real clients (python-telegram-bot, slack-sdk, aiosmtplib, aiohttp) against faithful fakes and a
real SMTP server: content, edits in place, 429 and 5xx handling, dead letters, isolation, storms."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from router.app import utc_now
from router.channels import build_channels
from router.config import parse_config
from router.delivery import Outbox
from router.reload import build_renderer
from router.store.postgres import PostgresStore

from .harness import AUTH, TELEGRAM_ONLY, Fakes, config_text, firing_payload, post, settled
from .helpers import fixture_body, open_core
from .test_intake import locked

# ------------------------------------------------------------------ content and edits


async def test_each_channel_gets_the_incident_and_resolve_updates_it_in_place(
    fakes: Fakes, make_client: Any
) -> None:
    client = await make_client(fakes)
    opened = await post(client, fixture_body("firing-group-3-alerts"))
    incident = opened["incidents"][0]
    await settled(client)
    await post(client, fixture_body("mixed-firing-resolved"))
    await post(client, fixture_body("resolved-group"))
    notes = await settled(client)
    assert {n["state"] for n in notes} == {"sent"} and len(notes) == 12

    # Telegram: one message, HTML, silent for a warning, in the forum topic, with an Ack button;
    # then edited twice in place; no second message (resolves do not ping).
    tg = fakes.telegram
    [msg] = tg.messages.values()
    first = tg.sent()[0]
    assert first["parse_mode"] == "HTML" and first["message_thread_id"] == "7"
    assert first["disable_notification"] == "true"
    assert first["reply_markup"] == {
        "inline_keyboard": [[{"text": "✅ Ack", "callback_data": f"ack:{incident}"}]]
    }
    assert first["text"].startswith("🟠 <b>WARNING: HighLatency</b> ×3")
    assert msg.edits == 2 and msg.text.startswith("✅ <b>RESOLVED: HighLatency</b>")
    assert msg.reply_markup is None  # no Ack button on a resolved incident

    # Slack: Block Kit in a coloured attachment, Acknowledge + link buttons; chat.update; a thread reply.
    [post_] = fakes.slack.posts()
    attachment = post_.payload["attachments"][0]
    assert attachment["color"] == "#f57c00"
    actions = attachment["blocks"][-1]["elements"]
    assert [a["text"]["text"] for a in actions] == ["Acknowledge", "Runbook", "Silence"]
    assert actions[0]["value"] == incident
    assert len(post_.updates) == 2
    assert post_.updates[-1]["attachments"][0]["color"] == "#388e3c"
    assert [r.payload["text"] for r in fakes.slack.replies()] == [f"✅ #{incident} resolved"]

    # Email: three mails in one thread, text + HTML.
    mails = fakes.mailbox.messages
    assert len(mails) == 3
    assert mails[0]["Subject"] == f"[WARNING:3] HighLatency service=checkout (#{incident})"
    assert mails[0]["X-Team"] == "sre"
    assert [m["In-Reply-To"].strip() for m in mails[1:]] == [mails[0]["Message-ID"].strip()] * 2
    assert [p.get_content_type() for p in mails[0].iter_parts()] == ["text/plain", "text/html"]

    # PagerDuty: trigger, trigger (update), resolve, all on one dedup_key.
    events = fakes.pagerduty.events
    assert [e["event_action"] for e in events] == ["trigger", "trigger", "resolve"]
    assert {e["dedup_key"] for e in events} == {f"alert-router/{incident}"}
    payload = events[0]["payload"]
    assert payload["severity"] == "warning" and payload["source"] == "checkout-0:8080"
    assert payload["summary"].startswith("[WARNING] HighLatency ×3: p99 latency above 500ms")
    assert [link["text"] for link in events[0]["links"]] == [
        "Runbook",
        "Source",
        "Silence in Alertmanager",
    ]
    assert fakes.pagerduty.incidents() == {f"alert-router/{incident}": "resolved"}


async def test_new_alerts_in_an_open_incident_edit_and_ping(fakes: Fakes, make_client: Any) -> None:
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, TELEGRAM_ONLY)
    await post(client, firing_payload(1, "grow"))
    await settled(client)
    await post(client, firing_payload(2, "grow"))
    await settled(client)
    original, reply = sorted(fakes.telegram.messages.values(), key=lambda m: m.message_id)
    assert original.edits == 1 and "×2" in original.text
    assert reply.reply_to == original.message_id and "new alerts" in reply.text


async def test_a_message_too_long_for_telegram_is_fitted_not_lost(
    fakes: Fakes, make_client: Any
) -> None:
    receivers = """
  - name: main
    telegram_configs: [{bot_token: "123456:good-token", chat_id: 1001, api_url: TELEGRAM}]
    slack_configs: [{bot_token: xoxb-good, channel: "#alerts", api_url: SLACK}]
"""
    client = await make_client(fakes, receivers)
    await post(client, firing_payload(80, "big", description='<disk> & "quota" ' * 20))
    notes = await settled(client)
    assert {n["state"] for n in notes} == {"sent"}
    [msg] = fakes.telegram.messages.values()
    assert "more paragraph(s) not shown: the message is limited to 4096" in msg.text
    assert msg.text.rstrip().endswith("/ack " + notes[0]["incident"])
    [slack_post] = fakes.slack.posts()
    assert len(slack_post.payload["attachments"][0]["blocks"]) <= 50


# ------------------------------------------------------------------ failures


async def test_telegram_429_is_waited_out_then_delivered_once(
    fakes: Fakes, make_client: Any
) -> None:
    fakes.telegram.flood(retry_after=1)
    client = await make_client(fakes, TELEGRAM_ONLY)
    await post(client, fixture_body("firing-group-3-alerts"))
    [note] = await settled(client)
    assert (note["state"], note["attempts"]) == ("sent", 2)
    sends = [t for m, _, t in fakes.telegram.calls if m == "sendMessage"]
    assert len(sends) == 2 and sends[1] - sends[0] >= 0.95  # retry_after: 1
    assert len(fakes.telegram.messages) == 1


async def test_slack_429_honours_retry_after(fakes: Fakes, make_client: Any) -> None:
    receivers = """
  - name: main
    slack_configs: [{bot_token: xoxb-good, channel: "#alerts", api_url: SLACK}]
"""
    fakes.slack.ratelimit(retry_after=1)
    client = await make_client(fakes, receivers)
    await post(client, fixture_body("firing-group-3-alerts"))
    [note] = await settled(client)
    calls = [t for m, _, t in fakes.slack.calls if m == "chat.postMessage"]
    assert (note["state"], len(calls), len(fakes.slack.posts())) == ("sent", 2, 1)
    assert calls[1] - calls[0] >= 0.95  # Retry-After: 1 (two clocks, ms apart)


async def test_a_5xx_burst_is_retried_with_backoff_to_success(
    fakes: Fakes, make_client: Any
) -> None:
    receivers = """
  - name: main
    pagerduty_configs: [{routing_key: R0UTINGKEY0000000000000000000000, url: PAGERDUTY}]
"""
    fakes.pagerduty.fail_next += [(500, {}), (502, {}), (503, {})]
    client = await make_client(fakes, receivers)
    await post(client, fixture_body("firing-group-3-alerts"))
    [note] = await settled(client)
    assert (note["state"], note["attempts"]) == ("sent", 4)
    assert len(fakes.pagerduty.events) == 1


@pytest.mark.parametrize(
    ("receiver", "error"),
    [
        (
            'telegram_configs: [{bot_token: "123456:good-token", chat_id: 999, api_url: TELEGRAM}]',
            "telegram: Chat not found",
        ),
        (
            'telegram_configs: [{bot_token: "123456:revoked", chat_id: 1001, api_url: TELEGRAM}]',
            "telegram: Unauthorized",
        ),
        (
            'slack_configs: [{bot_token: xoxb-good, channel: "#nope", api_url: SLACK}]',
            "slack: channel_not_found",
        ),
        (
            'slack_configs: [{bot_token: xoxb-revoked, channel: "#alerts", api_url: SLACK}]',
            "slack: invalid_auth",
        ),
        ('pagerduty_configs: [{routing_key: "", url: PAGERDUTY}]', "pagerduty: 400 "),
        (
            "email_configs: [{to: nobody@invalid.example, from: ar@example.com, smarthost: SMTPHOST, require_tls: false}]",
            "smtp: recipients refused",
        ),
    ],
)
async def test_a_permanent_error_dead_letters_at_once_with_its_text(
    fakes: Fakes, make_client: Any, receiver: str, error: str
) -> None:
    client = await make_client(fakes, f"  - name: main\n    {receiver}\n")
    await post(client, fixture_body("firing-group-3-alerts"))
    [note] = await settled(client)
    assert (note["state"], note["attempts"]) == ("dead", 1)
    assert note["last_error"].startswith(error)


async def test_a_dead_channel_does_not_delay_another(fakes: Fakes, make_client: Any) -> None:
    receivers = """
  - name: main
    slack_configs: [{bot_token: xoxb-good, channel: "#alerts", api_url: "REFUSED/api/"}]
    telegram_configs: [{bot_token: "123456:good-token", chat_id: 1001, api_url: TELEGRAM}]
"""
    client = await make_client(fakes, receivers)
    await post(client, fixture_body("firing-group-3-alerts"))
    # Telegram is sent while Slack's refused attempts are retried (their backoff runs for an
    # hour): a queue shared by the two would hold Telegram far beyond this bound.
    for _ in range(500):
        if fakes.telegram.messages:
            break
        await asyncio.sleep(0.02)
    assert fakes.telegram.messages
    for _ in range(100):  # the refused attempt may still be under way: wait for its outcome
        answer = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
        slack = next(n for n in answer["incidents"][0]["notifications"] if n["channel"] == "slack")
        if slack["state"] == "queued" and slack["last_error"]:
            break
        await asyncio.sleep(0.02)
    assert slack["state"] == "queued" and "ClientConnectorError" in slack["last_error"]


async def test_storm_is_folded_into_a_digest_without_429_loops(
    fakes: Fakes, make_client: Any
) -> None:
    client = await make_client(fakes, TELEGRAM_ONLY)
    for g in range(30):
        await post(client, firing_payload(2, f"storm{g}"))
    notes = await settled(client, timeout_s=30)
    assert len(notes) == 30 and {n["state"] for n in notes} == {"sent"}
    sends = fakes.telegram.sent()
    assert len(sends) < 10, "30 incidents should not be 30 messages"
    assert any("incidents at once" in s["text"] for s in sends)
    assert len(fakes.telegram.messages) == len(sends), "a 429 was answered: pacing failed"


async def test_pacing_respects_telegram_per_chat_limit(fakes: Fakes, make_client: Any) -> None:
    client = await make_client(fakes, TELEGRAM_ONLY)
    for g in range(3):
        await post(client, firing_payload(1, f"pace{g}"))
    notes = await settled(client)
    assert [n["attempts"] for n in notes] == [1, 1, 1]  # no 429 from the fake's flood control
    times = [t for m, _, t in fakes.telegram.calls if m == "sendMessage"]
    assert all(b - a >= 0.99 for a, b in itertools.pairwise(times))


async def test_slack_incoming_webhook_posts_each_notification_anew(
    fakes: Fakes, make_client: Any
) -> None:
    receivers = """
  - name: main
    slack_configs: [{webhook_url: "SLACK_HOOK"}]
""".replace("SLACK_HOOK", fakes.urls["slack"] + "/services/T000/B000/good")
    client = await make_client(fakes, receivers)
    await post(client, fixture_body("firing-group-3-alerts"))
    await settled(client)
    await post(client, fixture_body("resolved-group"))
    notes = await settled(client)
    assert [n["state"] for n in notes] == ["sent", "sent"]
    colours = [p["attachments"][0]["color"] for p in fakes.slack.webhook_posts]
    assert colours == ["#f57c00", "#388e3c"]  # no edits possible: a second message


@pytest.mark.parametrize(("password", "state"), [("s3cret", "sent"), ("wrong", "dead")])
async def test_smtp_auth(fakes: Fakes, make_client: Any, password: str, state: str) -> None:
    receivers = f"""
  - name: main
    email_configs: [{{to: a@example.com, from: ar@example.com, smarthost: SMTPHOST, require_tls: false,
                     auth_username: ar, auth_password: {password}}}]
"""
    client = await make_client(fakes, receivers)
    await post(client, fixture_body("firing-group-3-alerts"))
    [note] = await settled(client)
    assert note["state"] == state
    if state == "dead":
        assert note["last_error"].startswith("smtp: authentication failed: 535")


async def test_a_notification_a_store_error_stopped_is_sent_once_the_store_answers(
    fakes: Fakes, make_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack asks to retry while another program holds the store's lock: the retry cannot be
    written (the store error stops the destination's worker). The claimed notification is
    given back once the store answers, and sent, without a restart."""
    caplog.set_level(logging.ERROR, logger="router.delivery")
    receivers = """
  - name: main
    slack_configs: [{bot_token: xoxb-good, channel: "#alerts", api_url: SLACK}]
"""
    fakes.slack.ratelimit(retry_after=1)
    fakes.slack.delay_s = 0.5  # the 429 comes once the lock below is held
    client = await make_client(fakes, receivers)
    await post(client, fixture_body("firing-group-3-alerts"))
    async with asyncio.timeout(10):
        while not fakes.slack.calls:
            await asyncio.sleep(0.01)
    with locked(tmp_path / "state.db"):  # the retry's write waits for it 5 s, then fails

        def stopped() -> bool:
            return any(
                r.getMessage() == "outbox_store_error" and "destination" in r.fields  # type: ignore[attr-defined]
                for r in caplog.records
            )

        async with asyncio.timeout(30):
            while not stopped():
                await asyncio.sleep(0.05)
    fakes.slack.delay_s = 0
    [note] = await settled(client, timeout_s=30)
    assert note["state"] == "sent" and len(fakes.slack.posts()) == 1


async def test_two_replicas_send_one_chat_in_order_at_its_pace(
    fakes: Fakes, postgres_url: str, tmp_path: Path
) -> None:
    """Two replicas deliver from one PostgreSQL outbox: a chat's notifications go out once
    each, in their order, at Telegram's pace for a chat (the fake answers 429 to a faster
    sender), though both replicas claim: one destination is worked by one replica at a time."""
    text = config_text(fakes, tmp_path / "state.db", TELEGRAM_ONLY)
    config = parse_config(
        text.replace(f'path: "{tmp_path / "state.db"}"', f'url: "{postgres_url}"')
    )
    core = await open_core(PostgresStore(postgres_url), config)
    try:
        queued = [
            (await core.ingest(firing_payload(1, f"g{n}"), utc_now(), f"c{n}")).outbox[0]
            for n in range(4)
        ]
    finally:
        await core.aclose()
    renderer = build_renderer(config)
    replicas: list[tuple[PostgresStore, Outbox]] = []
    try:
        for _ in range(2):
            store = PostgresStore(postgres_url)
            await store.open()
            outbox = Outbox(store, build_channels(config, renderer, dry_run=False), utc_now)
            replicas.append((store, outbox))
        for _, outbox in replicas:
            outbox.task = asyncio.create_task(outbox.run())
        async with asyncio.timeout(60):
            while (await replicas[0][0].outbox_stats(utc_now()))[0]:  # all sent and recorded
                await asyncio.sleep(0.05)
        incidents = await replicas[0][0].list_incidents(10)
    finally:
        for store, outbox in replicas:
            await outbox.drain(timedelta(seconds=5))
            await store.aclose()
    assert [n["attempts"] for i in incidents for n in i["notifications"]] == [1] * 4  # no 429
    acks = [
        m["reply_markup"]["inline_keyboard"][0][0]["callback_data"] for m in fakes.telegram.sent()
    ]
    assert acks == [f"ack:{item.incident_id}" for item in queued]  # in the order queued
    times = [t for m, _, t in fakes.telegram.calls if m == "sendMessage"]
    assert all(b - a >= 0.99 for a, b in itertools.pairwise(times))
