"""Telegram errors classified as the Bot API documents them, against the fake Bot API: chat
migration followed and remembered across restarts, permanent errors dead-lettered at once
(after one plain-text try) without holding back the next message, transient ones retried."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ..harness import Fakes, firing_payload, post, settled
from ..helpers import fixture_body

GROUP = """
  - name: main
    telegram_configs: [{bot_token: "123456:good-token", chat_id: -1002, api_url: TELEGRAM}]
"""
NEW_ID = -1003
PRIVATE = GROUP.replace("-1002", "1001")  # paced at 1 message/s, not one per 3 s


def sent_to(fakes: Fakes) -> list[int]:
    """The chat id of every sendMessage call, accepted or not."""
    return [int(p["chat_id"]) for p in fakes.telegram.sent()]


async def test_a_migrated_group_is_followed_remembered_and_reported(
    fakes: Fakes, make_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="router.delivery")
    fakes.telegram.flood_interval_s = 0
    fakes.telegram.migrate(-1002, NEW_ID)
    client = await make_client(fakes, GROUP)
    await post(client, firing_payload(1, "mig1"))
    [note] = await settled(client)
    assert (note["state"], note["attempts"]) == ("sent", 1), note
    assert sent_to(fakes) == [-1002, NEW_ID]
    [msg] = fakes.telegram.messages.values()
    assert msg.chat_id == NEW_ID
    [warning] = [r for r in caplog.records if r.getMessage() == "destination_moved"]
    fields = warning.__dict__["fields"]
    assert (fields["old_id"], fields["new_id"]) == ("-1002", str(NEW_ID))
    assert "update chat_id in the config" in fields["action"]
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT channel, old_id, new_id FROM moved_chats").fetchall()
    assert rows == [("telegram", "-1002", str(NEW_ID))]

    # A restart: the config still says -1002; the store's move is followed at once, and said.
    await client.close()
    caplog.clear()
    client = await make_client(fakes, GROUP)
    await post(client, firing_payload(1, "mig2"))
    notes = await settled(client)
    assert [n["state"] for n in notes] == ["sent", "sent"]
    assert sent_to(fakes) == [-1002, NEW_ID, NEW_ID]
    assert [r for r in caplog.records if r.getMessage() == "destination_moved"]


async def test_an_edit_in_a_migrated_group_is_sent_anew_in_the_supergroup(
    fakes: Fakes, make_client: Any
) -> None:
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, GROUP)
    await post(client, fixture_body("firing-group-3-alerts"))
    await settled(client)
    fakes.telegram.migrate(-1002, NEW_ID)
    await post(client, fixture_body("resolved-group"))
    notes = await settled(client)
    assert [(n["state"], n["attempts"]) for n in notes] == [("sent", 1), ("sent", 1)]
    old, new = sorted(fakes.telegram.messages.values(), key=lambda m: m.message_id)
    assert (old.chat_id, old.edits, new.chat_id) == (-1002, 0, NEW_ID)
    assert "RESOLVED" in new.text


KICKED = (403, {"description": "Forbidden: bot was kicked from the group chat"})
PARSE = (400, {"description": "Bad Request: can't parse entities: unsupported start tag"})
CONFLICT = (409, {"description": "Conflict: terminated by other getUpdates request"})


@pytest.mark.parametrize(
    ("failures", "state", "attempts", "error"),
    [
        (
            [(429, {"description": "Too Many Requests", "parameters": {"retry_after": 1}})],
            "sent",
            2,
            "",
        ),
        ([(500, {"description": "Internal Server Error"})], "sent", 2, ""),
        ([(502, {"description": "Bad Gateway"})], "sent", 2, ""),
        ([(429, {"description": "Too Many Requests"})], "sent", 2, ""),  # no retry_after: backoff
        ([KICKED, KICKED], "dead", 1, "telegram: Forbidden: bot was kicked from the group chat;"),
        ([PARSE], "sent", 1, ""),  # refused rich text: the plain text goes instead
        ([PARSE, PARSE], "dead", 1, "telegram: Can't parse entities"),
        ([(401, {"description": "Unauthorized"})] * 2, "dead", 1, "telegram: Unauthorized"),
        ([CONFLICT] * 6, "dead", 3, "Conflict"),  # unclassified: 3 attempts, then dead
    ],
    ids=["429", "500", "502", "429-bare", "kicked", "parse-once", "parse", "401", "unclassified"],
)
async def test_bot_api_errors_are_classified(
    fakes: Fakes,
    make_client: Any,
    failures: list[tuple[int, dict[str, Any]]],
    state: str,
    attempts: int,
    error: str,
) -> None:
    fakes.telegram.flood_interval_s = 0
    fakes.telegram.fail_next += failures
    client = await make_client(fakes, PRIVATE)
    await post(client, firing_payload(1, "first"))
    await post(client, firing_payload(1, "second"))  # queued behind it, for the same chat
    notes = await settled(client)
    by_group = {n["incident"]: n for n in notes}
    first, second = sorted(by_group.values(), key=lambda n: n["id"])
    assert (first["state"], first["attempts"]) == (state, attempts), first
    assert (first["last_error"] or "").startswith(error), first
    assert (second["state"], second["attempts"]) == ("sent", 1), "the next one was held back"
    if failures == [PARSE]:
        plain = [m.text for m in fakes.telegram.messages.values()]
        assert any("rendered without its template" in t for t in plain), plain


async def test_edit_answers_not_modified_and_not_found(fakes: Fakes, make_client: Any) -> None:
    fakes.telegram.flood_interval_s = 0
    client = await make_client(fakes, PRIVATE)
    await post(client, fixture_body("firing-group-3-alerts"))
    await settled(client)
    fakes.telegram.fail_next.append(
        (
            400,
            {"description": "Bad Request: message is not modified: specified new message content"},
        )
    )
    await post(client, fixture_body("mixed-firing-resolved"))
    notes = await settled(client)
    assert [n["state"] for n in notes] == ["sent", "sent"]
    fakes.telegram.messages.clear()  # deleted by someone in the chat
    await post(client, fixture_body("resolved-group"))
    notes = await settled(client)
    assert [(n["state"], n["attempts"]) for n in notes] == [("sent", 1)] * 3
    [anew] = fakes.telegram.messages.values()
    assert "RESOLVED" in anew.text


async def test_a_refused_digest_is_delivered_one_by_one(fakes: Fakes, make_client: Any) -> None:
    fakes.telegram.flood_interval_s = 0
    fakes.telegram.refuse_containing = "incidents at once"  # every digest, rich or plain
    client = await make_client(fakes, PRIVATE)
    for g in range(10):
        await post(client, firing_payload(1, f"storm{g}"))
    notes = await settled(client, timeout_s=60)
    assert [(n["state"], n["attempts"]) for n in notes] == [("sent", 1)] * 10, notes
    assert any("incidents at once" in p["text"] for p in fakes.telegram.sent()), "no digest tried"
    assert len(fakes.telegram.messages) == 10  # each incident in a message of its own
