"""One `email_configs` entry of routes.yaml: recipients, sender, SMTP server, extra headers."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr

from router.config.types import HostPort, WithSecrets

# Headers the email channel writes itself: a second one makes every mail unbuildable.
OWN_MAIL_HEADERS = frozenset(
    {"subject", "from", "to", "date", "message-id", "in-reply-to", "references"}
    | {"mime-version", "content-type", "content-transfer-encoding"}
)


def _check_mail_header_name(name: str) -> str:
    if not re.fullmatch(r"[!-9;-~]+", name):  # RFC 5322 3.6.8: printable ASCII but ":"
        raise ValueError(f"invalid header name {name!r}: printable ASCII without spaces or ':'")
    if name.lower() in OWN_MAIL_HEADERS:
        raise ValueError(f"{name} is written by alert-router; use another header name")
    return name


MailHeaderName = Annotated[str, AfterValidator(_check_mail_header_name)]


class EmailConfig(WithSecrets):
    """One `email_configs` entry: recipients, sender, SMTP server and extra headers.

    `smarthost` is HOST:PORT (465: implicit TLS; else STARTTLS when `require_tls`);
    `auth_password` or `auth_password_file`; `headers` may not name one of OWN_MAIL_HEADERS.
    """

    secret_keys = ("auth_password",)

    to: str = Field(min_length=3)
    from_: str = Field(alias="from", min_length=3)
    smarthost: HostPort
    auth_username: str | None = None
    auth_password: SecretStr | None = None
    require_tls: bool = True
    headers: dict[MailHeaderName, str] = Field(default_factory=dict)
    send_resolved: bool | None = None
