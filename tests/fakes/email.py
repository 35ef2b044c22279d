"""A fake mail server for the email channel: a real SMTP server (aiosmtpd) that keeps what it
accepts, refuses what a strict MTA refuses, and answers the replies a test queues."""

from __future__ import annotations

import email
import email.policy
import re
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Mailbox:
    """A real SMTP server (aiosmtpd) that keeps what it accepts; refuses @invalid recipients."""

    messages: list[EmailMessage] = field(default_factory=list)
    refuse_next: list[str] = field(default_factory=list)  # SMTP replies to DATA, in turn
    attempts: list[float] = field(default_factory=list)  # time.monotonic() of each DATA

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.endswith("@invalid.example"):
            return "550 5.1.1 <" + address + ">: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.attempts.append(time.monotonic())
        if self.refuse_next:
            return self.refuse_next.pop(0)
        problem = smtp_problem(content)
        if problem:
            return f"554 5.6.0 {problem}"
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"


def smtp_problem(content: bytes) -> str:
    """What a strict MTA refuses in a message's bytes: a bare CR or LF (RFC 5321 2.3.8; Postfix
    `smtpd_forbid_bare_newline`), a NUL, or a header line over 998 octets (RFC 5322 2.1.1)."""
    if re.search(rb"\r(?!\n)|(?<!\r)\n", content):
        return "bare CR or LF in the message"
    head = content.split(b"\r\n\r\n", 1)[0]
    if b"\x00" in head:
        return "NUL in the header"
    if any(len(line) > 998 for line in head.split(b"\r\n")):
        return "header line longer than 998 octets"
    return ""


def check_password(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"ar",
        b"s3cret",
    )
    return AuthResult(success=ok, handled=False)  # not handled: the server answers 535 itself
