"""Slack inbound: the /ack slash command and the Acknowledge button, verified by signing secret."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import orjson
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from router.channels.slack.channel import ACK_ACTION
from router.chatops.commands import Actor, Allow, Commands, Policy, display_name, parse
from router.chatops.config import SlackChatops
from router.logs import event
from router.render import slack_escape

log = logging.getLogger("router.chatops.slack")
MAX_BODY = 64 * 1024
# slack-sdk's SignatureVerifier accepts a timestamp up to 5 minutes either side of now.
WINDOW = timedelta(minutes=5)
MAX_SEEN = 10_000  # signed requests remembered at once (10 minutes' worth at ~16/s)


class SeenRequests:
    """The (timestamp, signature) of each verified request, kept while the timestamp is inside
    the verifier's window, so that a replayed request is refused (api.slack.com/authentication/
    verifying-requests-from-slack: the timestamp check limits replays to the window; this closes
    it). Memory is bounded: entries expire with their timestamp, and at MAX_SEEN new ones wait."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """`clock`: seconds since the epoch, as Slack's X-Slack-Request-Timestamp counts."""
        self.clock = clock
        self._expiry: list[tuple[int, str]] = []  # heap of (timestamp + window, key)
        self._keys: set[str] = set()

    def add(self, timestamp: int, signature: str) -> bool | None:
        """True if this request is new (now remembered); False if it was seen: a replay; None if
        MAX_SEEN requests are remembered already (refuse for now: too many)."""
        now = self.clock()
        while self._expiry and self._expiry[0][0] < now:
            self._keys.discard(heapq.heappop(self._expiry)[1])
        key = f"{timestamp}:{signature}"
        if key in self._keys:
            return False
        if len(self._keys) >= MAX_SEEN:
            return None
        self._keys.add(key)
        heapq.heappush(self._expiry, (timestamp + int(WINDOW.total_seconds()), key))
        return True


class SlackApp:
    """Slack's inbound requests: slash commands and the Acknowledge button, each verified by
    its signature (signing secret, 5-minute window, no replays) and authorized by id."""

    def __init__(self, config: SlackChatops, commands: Commands) -> None:
        self.config = config
        self.commands = commands
        self.policy = slack_policy(config)
        # slack-sdk checks v0 HMAC-SHA256 of "v0:<timestamp>:<body>" and a timestamp within 5 minutes.
        self.verifier = SignatureVerifier(config.signing_secret.get_secret_value())
        self.seen = SeenRequests()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _verified_form(self, request: web.Request) -> dict[str, str] | web.Response:
        body = await request.read()  # bounded already (router/serving.py)
        if len(body) > MAX_BODY:
            return web.json_response({"error": "body too large"}, status=413)
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        try:
            valid = (
                timestamp.isdigit()
                and bool(signature)
                and self.verifier.is_valid(body, timestamp, signature)
            )
        except (
            ValueError
        ):  # slack-sdk raises on a malformed timestamp: that is a bad request, not ours
            valid = False
        if not valid:
            event(
                log,
                logging.WARNING,
                "slack_request_rejected",
                reason="bad or stale signature",
                peer=request.remote or "",
            )
            return web.json_response({"error": "invalid signature"}, status=401)
        new = self.seen.add(int(timestamp), signature)
        if not new:
            reason = "replayed" if new is False else "too many signed requests in 5 minutes"
            event(
                log,
                logging.WARNING,
                "slack_request_rejected",
                reason=reason,
                peer=request.remote or "",
            )
            if new is None:
                return web.json_response({"error": reason}, status=429)
            return web.json_response(
                {"error": "replayed request: this timestamp and signature were used"}, status=401
            )
        try:
            return {k: v[0] for k, v in parse_qs(body.decode(), strict_parsing=False).items()}
        except UnicodeDecodeError:
            return web.json_response({"error": "body is not UTF-8"}, status=400)

    async def handle_command(self, request: web.Request) -> web.Response:
        """POST /slack/commands: `/ack <id> [2h] [comment]`, `/alerts`, `/unack <id>`, `/help`."""
        form = await self._verified_form(request)
        if isinstance(form, web.Response):
            return form
        actor = _actor(
            request,
            form.get("team_id", ""),
            form.get("user_id", ""),
            form.get("user_name", ""),
            form.get("channel_id", ""),
        )
        refusal = self.commands.authorize(actor, self.policy)
        if refusal is not None:
            return _answer(refusal)
        command = parse(form.get("command", "/help"), form.get("text", ""))
        if isinstance(command, str):
            return _answer(command)
        reply = await self.commands.run(command, actor, self.policy)
        public = command.name in ("ack", "unack") and reply.startswith(("✅", "↩️"))
        return _answer(reply, public=public)

    async def handle_interaction(self, request: web.Request) -> web.Response:
        """POST /slack/interactions: the Acknowledge button (block_actions)."""
        form = await self._verified_form(request)
        if isinstance(form, web.Response):
            return form
        try:
            payload = orjson.loads(form.get("payload", ""))
        except orjson.JSONDecodeError:
            return web.json_response({"error": "payload is not JSON"}, status=400)
        if not isinstance(payload, dict):
            return web.json_response({"error": "payload is not a JSON object"}, status=400)
        actions = [
            a
            for a in _list(payload.get("actions"))
            if isinstance(a, dict) and a.get("action_id") == ACK_ACTION
        ]
        if payload.get("type") != "block_actions" or not actions:
            return web.Response(status=200)  # link buttons and other interactions need nothing
        user, channel = _dict(payload.get("user")), _dict(payload.get("channel"))
        actor = _actor(
            request,
            str(_dict(payload.get("team")).get("id", "")),
            str(user.get("id", "")),
            str(user.get("username") or user.get("name") or ""),
            str(channel.get("id", "")),
        )
        reply = self.commands.authorize(actor, self.policy) or await self.commands.press_ack(
            str(actions[0].get("value", "")), actor, self.policy
        )
        response_url = payload.get("response_url")
        if isinstance(response_url, str) and response_url.startswith(("https://", "http://")):
            self._respond_later(response_url, reply)
        return web.Response(status=200)

    def _respond_later(self, url: str, text: str) -> None:
        """Tell the clicking user the outcome (ephemeral), outside Slack's 3-second window."""

        async def post() -> None:
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
            try:
                async with self._session.post(
                    url,
                    json={
                        "response_type": "ephemeral",
                        "replace_original": False,
                        "text": slack_escape(text),
                    },
                ) as resp:
                    await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                event(log, logging.WARNING, "slack_response_url_failed", error=str(exc))

        task = asyncio.create_task(post())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Wait for the answers still being posted to response_urls, then close the session."""
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def slack_policy(config: SlackChatops) -> Policy:
    """Who may act, by the ids in routes.yaml: workspace, channels, members, per receiver."""

    def allow(channels: list[str] | None, users: list[str] | None) -> Allow:
        return Allow(
            frozenset(config.allowed_channels if channels is None else channels),
            frozenset(config.allowed_users if users is None else users),
        )

    return Policy(
        "slack",
        config.team_id,
        allow(None, None),
        {n: allow(s.allowed_channels, s.allowed_users) for n, s in config.receivers.items()},
    )


def _actor(request: web.Request, team: str, user_id: str, user_name: str, channel: str) -> Actor:
    """The Slack user by ids (team_id, user_id, channel_id: Slack's, unforgeable once the
    signature is checked); the user name is only shown."""
    name = display_name(f"@{user_name}" if user_name else user_id)
    return Actor("slack", user_id, name, channel, team, request.remote or "")


def _answer(text: str, *, public: bool = False) -> web.Response:
    """A slash command's answer: in the channel or to the user only. The text is escaped for
    mrkdwn, so that what a user typed (a name, `<!channel>`) is shown, never a mention or link
    (api.slack.com/reference/surfaces/formatting#escaping)."""
    return web.json_response(
        {"response_type": "in_channel" if public else "ephemeral", "text": slack_escape(text)}
    )


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
