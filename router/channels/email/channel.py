"""Email: aiosmtplib, multipart text + HTML; later mails of an incident reply in its thread."""

from __future__ import annotations

import re
from email.errors import MessageError
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid

import aiosmtplib

from router.channels.base import Channel, Delivered, Delivery, Digest, Failed, Message, RetryLater
from router.channels.email.config import EmailConfig

IMPLICIT_TLS_PORT = 465
SUBJECT_MAX = 250  # characters; the header is folded into lines of at most 78 (RFC 5322 2.1.1)
# What str.splitlines() splits on, and the other C0 controls and DEL, which RFC 5322 (3.2.5,
# 4.1: obsolete) does not allow in a header: Python's email package refuses the line
# separators outright ("Header values may not contain linefeed or carriage return characters").
_NOT_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]+")


def header_text(value: str, limit: int | None = None) -> str:
    """`value` as one header line: every run of line separators and control characters becomes
    one space (tabs are kept), then cut to `limit` characters with "…"."""
    text = _NOT_IN_HEADER.sub(" ", value).strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


class EmailChannel(Channel[EmailConfig]):
    """Mails over SMTP; an update replies in the incident's thread (In-Reply-To the first)."""

    kind = "email"

    def _recipients(self) -> list[str]:
        return [addr for _, addr in getaddresses([self.config.to]) if addr]

    def _build(
        self, subject: str, text: str, html: str | None, reply_to: str | None
    ) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = header_text(subject, SUBJECT_MAX)
        mail["From"] = header_text(self.config.from_)
        mail["To"] = header_text(", ".join(self._recipients()))
        mail["Date"] = formatdate(localtime=False)
        domain = self.config.from_.rpartition("@")[2].strip("> ") or "alert-router"
        mail["Message-ID"] = make_msgid(domain=domain)
        if reply_to:
            mail["In-Reply-To"] = header_text(reply_to)
            mail["References"] = header_text(reply_to)
        for key, value in self.config.headers.items():
            mail[key] = header_text(value)
        mail.set_content(text)
        if html:
            mail.add_alternative(html, subtype="html")
        return mail

    def _mail(self, parts: dict[str, str], reply_to: str | None) -> EmailMessage | Failed:
        """The mail for `parts`, or Failed: a mail that cannot be built now never can be."""
        try:
            return self._build(parts["subject"], parts["text"], parts.get("html"), reply_to)
        except (ValueError, TypeError, LookupError, MessageError) as exc:
            return Failed(f"email: the mail cannot be built: {type(exc).__name__}: {exc}")

    async def _send(self, mail: EmailMessage | Failed) -> Delivery:
        """Send over SMTP. 4xx answers (RFC 5321 4.2.1: transient) and network errors: retry
        later; 5xx answers, refused authentication, every recipient refused for good: Failed."""
        if isinstance(mail, Failed):
            return mail
        host, _, port_text = self.config.smarthost.rpartition(":")
        port = int(port_text)
        password = (
            self.config.auth_password.get_secret_value() if self.config.auth_password else None
        )
        try:
            await aiosmtplib.send(
                mail,
                hostname=host,
                port=port,
                username=self.config.auth_username,
                password=password,
                use_tls=port == IMPLICIT_TLS_PORT,
                start_tls=None
                if port == IMPLICIT_TLS_PORT
                else (True if self.config.require_tls else None),
                timeout=15,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            return Failed(f"smtp: authentication failed: {exc.code} {exc.message}")
        except aiosmtplib.SMTPRecipientsRefused as exc:
            reason = f"smtp: recipients refused: {[str(r) for r in exc.recipients]}"
            if all(400 <= r.code < 500 for r in exc.recipients):
                return RetryLater(None, reason)  # greylisting, mailbox busy: transient
            return Failed(reason)
        except aiosmtplib.SMTPNotSupported as exc:  # e.g. require_tls and no STARTTLS offered
            return Failed(f"smtp: {exc}")
        except aiosmtplib.SMTPResponseException as exc:
            reason = f"smtp: {exc.code} {exc.message}"
            return RetryLater(None, reason) if 400 <= exc.code < 500 else Failed(reason)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            return RetryLater(None, f"smtp: {type(exc).__name__}: {exc}")
        return Delivered(str(mail["Message-ID"]))

    async def send(self, msg: Message) -> Delivery:
        """Mail the incident; Delivered(Message-ID), which later mails of it reply to."""
        return await self._send(self._mail(msg.parts, None))

    async def update(self, msg: Message, ref: str) -> Delivery:
        """Mail the incident's news as a reply to the mail `ref` (a Message-ID)."""
        result = await self._send(self._mail(msg.parts, ref))
        # The thread keeps its first Message-ID: replies all point at it.
        return Delivered(ref) if isinstance(result, Delivered) else result

    async def send_digest(self, digest: Digest) -> Delivery:
        """Mail the digest as one message of its own."""
        return await self._send(self._mail(digest.parts, None))
