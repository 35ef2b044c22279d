"""The contract every channel keeps, run over the one list of kinds (router/channels/__init__.py)
against each one's fake, as prometheus/alertmanager's notify/test RetryTests does for its
notifiers: sent; edited in place; retry later with the service's Retry-After; a permanent
refusal dead-lettered at once without holding back the next notification; one plain-text try
after a permanent refusal of the rendered message; messages over the service's size limits
fitted, not refused.

A kind with a second way to deliver has a second driver (Slack's incoming webhook, which cannot
edit: its update is a new message). --dry-run (router/channels/dryrun.py) is not in the list
and not run here: it sends nothing, so there is no service to throttle, refuse or limit sizes;
tests/test_intake.py covers what it logs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from router.channels import CHANNELS, channel_class

from ..harness import Fakes, firing_payload, post, settled
from ..helpers import fixture_body

PLAIN_MARK = "rendered without its template"


@dataclass(frozen=True)
class Driver:
    """How the contract drives one channel kind's fake."""

    kind: str
    receiver: str  # the receivers: entry, with the harness's placeholders
    throttle: Callable[[Fakes], None]  # the next request answers 429 with Retry-After: 1
    refuse: Callable[[Fakes], None]  # the next request is refused for good
    attempts: Callable[[Fakes], list[float]]  # time.monotonic() of every send attempt
    delivered: Callable[[Fakes], list[str]]  # what the service accepted, one text per message
    edited_in_place: Callable[[Fakes], bool]  # after firing then resolved: one message, updated
    retry_after: bool = True  # the protocol carries a Retry-After (SMTP does not)


def _telegram_throttle(f: Fakes) -> None:
    f.telegram.fail_next.append(
        (429, {"description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}})
    )


def _email_edited(f: Fakes) -> bool:
    first, reply = f.mailbox.messages
    return bool(reply["In-Reply-To"].strip() == first["Message-ID"].strip())


def _mail_text(mail: Any) -> str:
    return str(mail["Subject"]) + "\n" + mail.get_body(("plain",)).get_content()


def _pagerduty_edited(f: Fakes) -> bool:
    events = f.pagerduty.events
    return [e["event_action"] for e in events] == ["trigger", "resolve"] and len(
        f.pagerduty.incidents()
    ) == 1


DRIVERS: dict[str, Driver] = {
    "telegram": Driver(
        "telegram",
        '{bot_token: "123456:good-token", chat_id: 1001, api_url: TELEGRAM}',
        _telegram_throttle,
        lambda f: f.telegram.fail_next.append(
            (403, {"description": "Forbidden: bot was blocked by the user"})
        ),
        lambda f: [t for m, _, t in f.telegram.calls if m in ("sendMessage", "editMessageText")],
        lambda f: [m.text for m in f.telegram.messages.values()],
        lambda f: [m.edits for m in f.telegram.messages.values()] == [1],
    ),
    "slack": Driver(
        "slack",
        '{bot_token: xoxb-good, channel: "#alerts", api_url: SLACK}',
        lambda f: f.slack.ratelimit(retry_after=1),
        lambda f: f.slack.fail_next.append((200, "channel_not_found", {})),
        lambda f: [t for m, _, t in f.slack.calls if m in ("chat.postMessage", "chat.update")],
        lambda f: [json.dumps(p.payload, ensure_ascii=False) for p in f.slack.posts()],
        lambda f: [len(p.updates) for p in f.slack.posts()] == [1],
    ),
    "email": Driver(
        "email",
        "{to: oncall@example.com, from: ar@example.com, smarthost: SMTPHOST, require_tls: false}",
        lambda f: f.mailbox.refuse_next.append("451 4.7.1 Try again later"),
        lambda f: f.mailbox.refuse_next.append("554 5.7.1 Message refused by policy"),
        lambda f: f.mailbox.attempts,
        lambda f: [_mail_text(m) for m in f.mailbox.messages],
        _email_edited,
        retry_after=False,
    ),
    "slack-webhook": Driver(
        "slack",
        "{webhook_url: SLACK_WEBHOOK}",
        lambda f: f.slack.ratelimit(retry_after=1),
        lambda f: f.slack.fail_next.append((404, "channel_not_found", {})),
        lambda f: f.slack.webhook_attempts,
        lambda f: [json.dumps(p, ensure_ascii=False) for p in f.slack.webhook_posts],
        lambda f: len(f.slack.webhook_posts) == 2,  # cannot edit: the update is a new message
    ),
    "pagerduty": Driver(
        "pagerduty",
        "{routing_key: R0UTINGKEY0000000000000000000000, url: PAGERDUTY}",
        lambda f: f.pagerduty.fail_next.append((429, {"Retry-After": "1"})),
        lambda f: f.pagerduty.fail_next.append((400, {})),
        lambda f: f.pagerduty.attempts,
        lambda f: [json.dumps(e, ensure_ascii=False) for e in f.pagerduty.events],
        _pagerduty_edited,
    ),
}

KINDS = sorted(DRIVERS)


def test_every_channel_has_a_driver() -> None:
    kinds = sorted({d.kind for d in DRIVERS.values()})
    assert kinds == sorted(CHANNELS), "a new channel kind needs its Driver here"


@pytest.mark.parametrize("kind", sorted(CHANNELS))
def test_a_kind_declares_digest_parts_if_and_only_if_it_sends_digests(kind: str) -> None:
    assert (CHANNELS[kind].digest_parts is not None) == channel_class(kind).storm_guard


async def start(fakes: Fakes, make_client: Any, name: str) -> Any:
    fakes.telegram.flood_interval_s = 0
    driver = DRIVERS[name]
    receiver = driver.receiver.replace(
        "SLACK_WEBHOOK", f"{fakes.urls['slack']}/services/T000/B000/good"
    )
    return await make_client(fakes, f"  - name: main\n    {driver.kind}_configs: [{receiver}]\n")


@pytest.mark.parametrize("kind", KINDS)
async def test_sent(fakes: Fakes, make_client: Any, kind: str) -> None:
    client = await start(fakes, make_client, kind)
    await post(client, fixture_body("firing-group-3-alerts"))
    [note] = await settled(client)
    assert (note["state"], note["attempts"]) == ("sent", 1), note
    [text] = DRIVERS[kind].delivered(fakes)
    assert "HighLatency" in text and PLAIN_MARK not in text


@pytest.mark.parametrize("kind", KINDS)
async def test_edited_in_place(fakes: Fakes, make_client: Any, kind: str) -> None:
    client = await start(fakes, make_client, kind)
    await post(client, fixture_body("firing-group-3-alerts"))
    await settled(client)
    await post(client, fixture_body("resolved-group"))
    notes = await settled(client)
    assert [(n["state"], n["attempts"]) for n in notes] == [("sent", 1)] * 2, notes
    assert DRIVERS[kind].edited_in_place(fakes)


@pytest.mark.parametrize("kind", KINDS)
async def test_retry_later_waits_as_told(fakes: Fakes, make_client: Any, kind: str) -> None:
    driver = DRIVERS[kind]
    driver.throttle(fakes)
    client = await start(fakes, make_client, kind)
    await post(client, fixture_body("firing-group-3-alerts"))
    [note] = await settled(client)
    assert (note["state"], note["attempts"]) == ("sent", 2), note
    first, second = driver.attempts(fakes)
    if driver.retry_after:
        assert second - first >= 0.95  # Retry-After: 1 (the fake's and the router's clocks)
    assert len(driver.delivered(fakes)) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_permanent_refusal_is_dead_at_once_and_holds_nothing_back(
    fakes: Fakes, make_client: Any, kind: str
) -> None:
    driver = DRIVERS[kind]
    driver.refuse(fakes)  # the rendered message
    driver.refuse(fakes)  # and its plain text
    client = await start(fakes, make_client, kind)
    started = time.monotonic()
    await post(client, firing_payload(1, "refused"))
    await post(client, firing_payload(1, "next"))
    notes = await settled(client)
    refused, following = sorted(notes, key=lambda n: n["id"])
    assert (refused["state"], refused["attempts"]) == ("dead", 1), refused
    assert "as plain text:" in refused["last_error"]
    assert (following["state"], following["attempts"]) == ("sent", 1), following
    assert len(driver.attempts(fakes)) == 3 and len(driver.delivered(fakes)) == 1
    assert time.monotonic() - started < 10  # no backoff anywhere (pacing is 1 s at most)


@pytest.mark.parametrize("kind", KINDS)
async def test_plain_text_after_a_permanent_refusal(
    fakes: Fakes, make_client: Any, kind: str
) -> None:
    driver = DRIVERS[kind]
    driver.refuse(fakes)
    client = await start(fakes, make_client, kind)
    await post(client, fixture_body("firing-group-3-alerts"))
    [note] = await settled(client)
    assert (note["state"], note["attempts"]) == ("sent", 1), note
    [text] = driver.delivered(fakes)
    assert PLAIN_MARK in text and "HighLatency" in text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("alerts", "description"),
    [(1, "d" * 530_000), (20, "x" * 34_000), (1, "é😀" * 60_000), (300, "")],
)
async def test_size_limits(
    fakes: Fakes, make_client: Any, kind: str, alerts: int, description: str
) -> None:
    client = await start(fakes, make_client, kind)
    await post(client, firing_payload(alerts, "big", description=description))
    [note] = await settled(client)
    assert (note["state"], note["attempts"]) == ("sent", 1), note
    [text] = DRIVERS[kind].delivered(fakes)
    assert PLAIN_MARK not in text  # fitted by the channel, not refused and replaced
