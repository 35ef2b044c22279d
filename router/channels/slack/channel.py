"""Slack: slack-sdk's AsyncWebClient (Block Kit, chat.update, thread replies) or an incoming webhook."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from router.channels.base import Channel, Delivered, Delivery, Digest, Failed, Message, RetryLater
from router.channels.slack.config import SlackConfig
from router.models import IncidentView, Reason
from router.render import (
    LINK_MAX,
    Renderer,
    http_url,
    sanitize_mrkdwn,
    slack_escape,
    split_mrkdwn,
)

SECTION_MAX = 3000  # characters in one section block's text
MAX_SECTIONS = 45  # of Slack's 50 blocks, leaving room for the actions
COLOURS = {"critical": "#d32f2f", "error": "#d32f2f", "warning": "#f57c00", "info": "#1976d2"}
RESOLVED_COLOUR = "#388e3c"
PERMANENT = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_attachments",
        "invalid_arguments",
        "missing_scope",
        "restricted_action",
        "invalid_payload",
        "action_prohibited",
        "no_service",
        "channel_is_archived",
    }
)
GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
ACK_ACTION = "ack"
NOTED = frozenset({Reason.ACKED, Reason.UNACKED, Reason.ESCALATED})  # worth a line in the thread


def colour(view: IncidentView) -> str:
    """The attachment's colour bar: by severity, green once resolved, grey if unknown."""
    if view.status == "resolved":
        return RESOLVED_COLOUR
    return COLOURS.get(view.severity.lower(), "#616161")


def sections(text: str) -> list[str]:
    """Section texts of at most SECTION_MAX characters: a paragraph each, a longer paragraph in
    several, never cut inside a `<link|text>`; past MAX_SECTIONS, paragraphs from the end of the
    body are left out, with a line saying how many, and the last (id and /ack) is kept."""
    paragraphs = _section_texts(text)
    if len(paragraphs) > MAX_SECTIONS:
        dropped = len(paragraphs) - MAX_SECTIONS + 1
        paragraphs = [
            *paragraphs[: MAX_SECTIONS - 2],
            f"… {dropped} more section(s) not shown: a Slack message holds {MAX_SECTIONS}",
            paragraphs[-1],
        ]
    return paragraphs


def _section_texts(text: str) -> list[str]:
    return [
        piece
        for paragraph in sanitize_mrkdwn(text).split("\n\n")
        for piece in (p.strip() for p in split_mrkdwn(paragraph, SECTION_MAX))
        if piece
    ]


def blocks_for(view: IncidentView, text: str) -> list[dict[str, Any]]:
    """Section blocks from the rendered mrkdwn, then link and Acknowledge buttons."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": p}} for p in sections(text)
    ]
    buttons: list[dict[str, Any]] = []
    if view.status == "firing" and not view.acked_by:
        buttons.append(
            {
                "type": "button",
                "action_id": ACK_ACTION,
                "style": "primary",
                "value": view.id,
                "text": {"type": "plain_text", "text": "Acknowledge"},
            }
        )
    alerts = view.firing or view.resolved
    if alerts:
        first = alerts[0]
        for label, url in (
            ("Runbook", first.runbook_url),
            ("Dashboard", first.dashboard_url),
            ("Silence", first.silence_url),
        ):
            if http_url(url, LINK_MAX):  # Block Kit: an absolute URL of at most 3000 characters
                buttons.append(
                    {
                        "type": "button",
                        "action_id": f"link_{label.lower()}",
                        "url": url,
                        "text": {"type": "plain_text", "text": label},
                    }
                )
    if buttons:
        blocks.append({"type": "actions", "elements": buttons[:25]})
    return blocks


def fallback_text(text: str) -> str:
    """The notification preview: the message's first line, at most 300 characters, whole links."""
    first = sanitize_mrkdwn(text).split("\n", 1)[0]
    return split_mrkdwn(first, 300)[0] if first.strip() else "(empty message)"


class SlackChannel(Channel[SlackConfig]):
    """Block Kit messages through the Web API (edited in place, news in the thread) or an
    incoming webhook (cannot edit: an update is a new message); errors classified in
    `_classified` and `_post_webhook` (429 with Retry-After, permanent errors, the rest later)."""

    kind = "slack"

    def __init__(self, config: SlackConfig, renderer: Renderer) -> None:
        super().__init__(config, renderer)
        self._session: aiohttp.ClientSession | None = None

    def min_interval(self) -> timedelta:
        """1 s: Slack's chat.postMessage allows about one message per second per channel."""
        return timedelta(seconds=1)

    def _client(self) -> AsyncWebClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        assert self.config.bot_token is not None
        base = (
            self.config.api_url if self.config.api_url.endswith("/") else self.config.api_url + "/"
        )
        return AsyncWebClient(
            token=self.config.bot_token.get_secret_value(),
            base_url=base,
            session=self._session,
            retry_handlers=[],
        )

    def digest_fits(self, parts: dict[str, str]) -> bool:
        """Whether the digest's text makes at most MAX_SECTIONS section blocks."""
        return len(_section_texts(parts["message"])) <= MAX_SECTIONS

    def _webhook(self) -> AsyncWebhookClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        assert self.config.webhook_url is not None
        return AsyncWebhookClient(
            self.config.webhook_url.get_secret_value(), session=self._session, retry_handlers=[]
        )

    def _payload(self, msg: Message) -> dict[str, Any]:
        text = msg.parts["message"]
        return {
            "text": fallback_text(text),
            "attachments": [{"color": colour(msg.view), "blocks": blocks_for(msg.view, text)}],
        }

    async def send(self, msg: Message) -> Delivery:
        """Post the incident's message: Delivered("<channel>:<ts>") (webhook: Delivered(""))."""
        if self.config.webhook_url is not None:
            return await self._post_webhook(self._payload(msg))

        async def do() -> Delivery:
            resp = await self._client().chat_postMessage(
                channel=self.config.channel or "", unfurl_links=False, **self._payload(msg)
            )
            return Delivered(f"{resp['channel']}:{resp['ts']}")

        return await _classified(do)

    async def update(self, msg: Message, ref: str) -> Delivery:
        """Edit the message `ref` in place and note the change in its thread (a gone message
        is posted anew); a webhook posts a new message."""
        if self.config.webhook_url is not None:
            return await self.send(msg)  # incoming webhooks cannot edit: a new message
        channel, _, ts = ref.partition(":")

        async def do() -> Delivery:
            client = self._client()
            try:
                await client.chat_update(channel=channel, ts=ts, **self._payload(msg))
            except SlackApiError as exc:
                if exc.response.get("error") in GONE:
                    return await self.send(msg)
                raise
            if msg.alerting or msg.view.status == "resolved" or msg.view.reason in NOTED:
                await client.chat_postMessage(
                    channel=channel,
                    thread_ts=ts,
                    reply_broadcast=msg.alerting,
                    text=_thread_note(msg.view),
                )
            return Delivered(ref)

        return await _classified(do)

    def digest_payload(self, digest: Digest) -> dict[str, Any]:
        """chat.postMessage arguments for a digest: its preview text and section blocks."""
        text = digest.parts["message"]
        return {
            "text": fallback_text(text),
            "blocks": [b for b in blocks_for(digest.views[0], text) if b["type"] == "section"],
        }

    async def send_digest(self, digest: Digest) -> Delivery:
        """Post the digest as one message of section blocks."""
        payload = self.digest_payload(digest)
        if self.config.webhook_url is not None:
            return await self._post_webhook(payload)

        async def do() -> Delivery:
            await self._client().chat_postMessage(channel=self.config.channel or "", **payload)
            return Delivered("")

        return await _classified(do)

    async def _post_webhook(self, payload: dict[str, Any]) -> Delivery:
        try:
            resp = await self._webhook().send(**payload)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return RetryLater(None, f"slack webhook: {type(exc).__name__}: {exc}")
        if resp.status_code == 200:
            return Delivered("")
        body = (resp.body or "").strip()
        if resp.status_code == 429:
            return RetryLater(_retry_after(resp.headers), f"slack webhook: 429 {body}")
        if resp.status_code >= 500:
            return RetryLater(None, f"slack webhook: {resp.status_code} {body}")
        return Failed(f"slack webhook: {resp.status_code} {body}")

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()


def _thread_note(view: IncidentView) -> str:
    if view.status == "resolved":
        return f"✅ #{view.id} resolved"
    if view.reason is Reason.ACKED:
        silence = f", silenced (silence {view.silence_id})" if view.silence_id else ""
        # The name is a chat user's: escaped, so that `<!channel>` is shown, never a mention.
        return f"👤 #{view.id} acknowledged by {slack_escape(view.acked_by)}{slack_escape(silence)}"
    if view.reason is Reason.UNACKED:
        return f"↩️ #{view.id} is no longer acknowledged"
    if view.reason is Reason.ESCALATED:
        return f"⬆️ #{view.id} escalated to {view.escalated_to}: not acknowledged in time"
    return (
        f"🔁 #{view.id} {view.reason.value.replace('_', ' ')}: {len(view.firing)} alert(s) firing"
    )


def _retry_after(headers: Any) -> timedelta | None:
    """The Retry-After header's wait (seconds, RFC 9110 10.2.3), or None if absent or not a
    number."""
    for key in ("Retry-After", "retry-after"):
        value = headers.get(key) if headers else None
        if value is not None:
            if isinstance(value, list):
                value = value[0]
            try:
                return timedelta(seconds=float(value))
            except (ValueError, OverflowError):
                return None
    return None


async def _classified(call: Any) -> Delivery:
    try:
        result: Delivery = await call()
        return result
    except SlackApiError as exc:
        data = exc.response.data  # a str when the answer is not JSON (a wrong URL, a proxy's page)
        error = str(data.get("error") or "") if isinstance(data, dict) else ""
        status = exc.response.status_code
        if status == 429 or error == "ratelimited":
            return RetryLater(
                _retry_after(exc.response.headers), f"slack: {error or 'ratelimited'}"
            )
        if error in PERMANENT or (400 <= status < 500 and status != 408):
            return Failed(f"slack: {error or status}")
        return RetryLater(None, f"slack: {error or status}")
    except (TimeoutError, aiohttp.ClientError) as exc:
        return RetryLater(None, f"slack: {type(exc).__name__}: {exc}")
