"""Email: aiosmtplib, multipart text + HTML; later mails of an incident reply in its thread."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid

import aiosmtplib

from router.channels.base import Channel, Delivered, Delivery, Digest, Failed, Message, RetryLater
from router.config import EmailConfig

IMPLICIT_TLS_PORT = 465


class EmailChannel(Channel[EmailConfig]):
    kind = "email"

    def _recipients(self) -> list[str]:
        return [addr for _, addr in getaddresses([self.config.to]) if addr]

    def _build(
        self, subject: str, text: str, html: str | None, reply_to: str | None
    ) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = subject.replace("\n", " ")[:250]
        mail["From"] = self.config.from_
        mail["To"] = ", ".join(self._recipients())
        mail["Date"] = formatdate(localtime=False)
        domain = self.config.from_.rpartition("@")[2].strip("> ") or "alert-router"
        mail["Message-ID"] = make_msgid(domain=domain)
        if reply_to:
            mail["In-Reply-To"] = reply_to
            mail["References"] = reply_to
        for key, value in self.config.headers.items():
            mail[key] = value
        mail.set_content(text)
        if html:
            mail.add_alternative(html, subtype="html")
        return mail

    async def _send(self, mail: EmailMessage) -> Delivery:
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
            return Failed(f"smtp: recipients refused: {[str(r) for r in exc.recipients]}")
        except aiosmtplib.SMTPResponseException as exc:
            reason = f"smtp: {exc.code} {exc.message}"
            return RetryLater(None, reason) if 400 <= exc.code < 500 else Failed(reason)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            return RetryLater(None, f"smtp: {type(exc).__name__}: {exc}")
        return Delivered(str(mail["Message-ID"]))

    async def send(self, msg: Message) -> Delivery:
        return await self._send(
            self._build(msg.parts["subject"], msg.parts["text"], msg.parts.get("html"), None)
        )

    async def update(self, msg: Message, ref: str) -> Delivery:
        result = await self._send(
            self._build(msg.parts["subject"], msg.parts["text"], msg.parts.get("html"), ref)
        )
        # The thread keeps its first Message-ID: replies all point at it.
        return Delivered(ref) if isinstance(result, Delivered) else result

    async def send_digest(self, digest: Digest) -> Delivery:
        return await self._send(
            self._build(
                digest.parts["subject"], digest.parts["text"], digest.parts.get("html"), None
            )
        )
