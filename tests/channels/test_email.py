"""Email headers against a real SMTP server (aiosmtpd) that refuses bare CR/LF, NUL and long
header lines: every line separator in alert data is folded, never raised, never retried."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from router.channels.email.channel import header_text
from router.config import parse_config
from router.errors import ConfigError

from ..harness import Fakes, post, settled
from .payloads import group_payload

# Everything str.splitlines() splits on (computed, so that a new one in Python is covered).
LINE_SEPARATORS = [
    chr(c) for c in range(sys.maxunicode + 1) if len(f"a{chr(c)}b".splitlines()) > 1
] + ["\r\n"]

EMAIL = """
  - name: main
    email_configs: [{to: oncall@example.com, from: "Alert\\u2028Router <ar@example.com>",
                     smarthost: SMTPHOST, require_tls: false, headers: {X-Team: "sre\\u2029ops\\r\\n"}}]
"""


def test_the_separators_are_the_ones_the_issue_names() -> None:
    named = {"\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r\n"}
    assert set(LINE_SEPARATORS) == named


@pytest.mark.parametrize("sep", LINE_SEPARATORS, ids=repr)
def test_header_text_folds_every_line_separator(sep: str) -> None:
    assert header_text(f"Disk{sep}full{sep}{sep}now{sep}") == "Disk full now"
    assert header_text("a\x00b\x7fc\td") == "a b c\td"  # controls too; a tab is whitespace


def test_header_text_cuts_with_an_ellipsis() -> None:
    assert header_text("x" * 300, 250) == "x" * 249 + "…"


@pytest.mark.parametrize("sep", LINE_SEPARATORS, ids=repr)
async def test_a_line_separator_in_alertname_and_group_label_is_folded_and_sent(
    fakes: Fakes, make_client: Any, sep: str
) -> None:
    body = group_payload(
        [({"alertname": f"Disk{sep}Full", "cluster": f"eu{sep}1"}, {})],
        {"alertname": f"Disk{sep}Full", "cluster": f"eu{sep}1"},
    )
    client = await make_client(fakes, EMAIL)
    await post(client, body)
    [note] = await settled(client)
    assert (note["state"], note["attempts"]) == ("sent", 1), note
    [mail] = fakes.mailbox.messages
    subject = mail["Subject"]
    assert "Disk Full" in subject and "cluster=eu 1" in subject
    assert not any(s in subject for s in LINE_SEPARATORS)
    assert mail["X-Team"] == "sre ops"
    assert mail["From"].addresses[0].display_name == "Alert Router"


async def test_a_huge_subject_is_cut_and_folded_within_998_octets(
    fakes: Fakes, make_client: Any
) -> None:
    name = "Ü\u2028" * 5000  # non-ASCII: encoded words; the MTA refuses a line over 998 octets
    body = group_payload([({"alertname": name}, {})], {"alertname": name})
    client = await make_client(fakes, EMAIL)
    await post(client, body)
    [note] = await settled(client)
    assert note["state"] == "sent", note
    [mail] = fakes.mailbox.messages
    assert mail["Subject"].startswith("[WARNING] Ü Ü") and len(mail["Subject"]) <= 250


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("X Team", "invalid header name"),
        ("X:Team", "invalid header name"),
        ("X-Ünï", "invalid header name"),
        ("message-id", "written by alert-router"),
        ("References", "written by alert-router"),
    ],
)
def test_a_header_name_that_would_break_every_mail_is_refused_at_load(
    name: str, error: str
) -> None:
    text = f"""
receivers:
  - name: main
    email_configs: [{{to: a@example.com, from: b@example.com, smarthost: "h:25",
                     headers: {{"{name}": v}}}}]
route: {{receiver: main}}
"""
    with pytest.raises(ConfigError, match=error):
        parse_config(text)
