"""What every channel is: render an incident, send it, edit it; errors classified, never retried here.

A channel turns its client library's answers into one of three results and returns at once:
`Delivered(ref)`, `RetryLater(after, reason)` (after None: use backoff) or `Failed(reason)`.
Retrying, waiting, ordering and rate limiting belong to delivery.py, for every channel alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from router.models import IncidentView, Reason
from router.render import Renderer


@dataclass(frozen=True)
class Delivered:
    """Accepted by the service; `ref` names the message for later edits."""

    ref: str  # what a later edit targets ("" if the channel cannot edit)


@dataclass(frozen=True)
class RetryLater:
    """Not accepted now, may be later: after the service's own wait, or after backoff."""

    after: timedelta | None  # the service's own wait (429), or None for exponential backoff
    reason: str


@dataclass(frozen=True)
class Failed:
    """Refused for good: sending the same again cannot succeed."""

    reason: str  # cannot succeed as it is (bad token, unknown chat, invalid payload)


Delivery = Delivered | RetryLater | Failed


# Reasons after which someone must be told again, not only see an edited message.
ALERTING = frozenset({Reason.FIRST, Reason.NEW_ALERTS, Reason.REPEAT, Reason.UNINHIBITED})


@dataclass(frozen=True)
class Message:
    """An incident rendered for one channel: its template parts and what they were made from."""

    view: IncidentView
    parts: dict[str, str]
    template_error: str | None = None
    plain: bool = False  # the built-in plain text, not the templates' rendering

    @property
    def alerting(self) -> bool:
        """Whether this notification must reach someone again (a ping, not only an edit)."""
        return self.view.reason in ALERTING


@dataclass(frozen=True)
class Digest:
    """Several notifications for one destination folded into one message (storm guard): the
    latest view of each incident it names."""

    views: list[IncidentView]
    parts: dict[str, str] = field(default_factory=dict)


C = TypeVar("C", bound=BaseModel)


class Channel(ABC, Generic[C]):
    """One channel config of one receiver: renders incidents, sends and edits them.

    Subclasses set `kind` (the key of CHANNELS) and implement `send` and `send_digest`; each
    call returns a Delivery and never sleeps, loops or retries (delivery.py does that).
    """

    kind: ClassVar[str]
    storm_guard: ClassVar[bool] = True  # fold a flood of notifications into one digest

    def __init__(self, config: C, renderer: Renderer) -> None:
        self.config = config
        self.renderer = renderer
        # Destinations the service moved (a Telegram group upgraded to a supergroup): old id ->
        # new id, shared by every channel of this kind and kept in the store by delivery.py,
        # which also sets on_moved to record a move the moment a channel sees one.
        self.moves: dict[str, str] = {}
        self.on_moved: Callable[[str, str], Awaitable[None]] | None = None

    def min_interval(self) -> timedelta:
        """Least time between two messages to this destination (the service's published limit)."""
        return timedelta(0)

    def render(self, view: IncidentView) -> Message:
        """The incident rendered with this kind's templates (the plain text if one fails)."""
        parts, error = self.renderer.render_or_fallback(self.kind, view)
        return Message(view, parts, error)

    def render_plain(self, view: IncidentView) -> Message:
        """The built-in plain message: what delivery.py sends once when the service refused the
        rendered one for good (Failed), before it gives up."""
        return Message(view, self.renderer.fallback(self.kind, view), plain=True)

    def render_digests(self, views: list[IncidentView]) -> list[Digest]:
        """Digests naming every incident of `views` (its latest view, once), in order, each
        small enough for one message of this channel (see digest_fits): as many as needed."""
        latest = list({v.id: v for v in views}.values())
        chunks: list[list[IncidentView]] = []
        start = 0
        while start < len(latest):
            size = self._digest_size(latest[start:], latest)
            chunks.append(latest[start : start + size])
            start += size
        return [
            Digest(chunk, self._digest_parts(chunk, latest, n + 1, len(chunks)))
            for n, chunk in enumerate(chunks)
        ]

    def _digest_size(self, rest: list[IncidentView], storm: list[IncidentView]) -> int:
        """How many of `rest` one digest message holds (at least 1): doubling, then bisecting."""

        def fits(n: int) -> bool:  # rendered with the widest part numbers it may get
            return self.digest_fits(self._digest_parts(rest[:n], storm, len(storm), len(storm)))

        if fits(len(rest)):
            return len(rest)
        good, bad = 1, len(rest)
        while good * 2 < bad and fits(good * 2):
            good *= 2
        bad = min(bad, good * 2)
        while bad - good > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if fits(mid) else (good, mid)
        return good

    def _digest_parts(
        self, chunk: list[IncidentView], storm: list[IncidentView], part: int, parts: int
    ) -> dict[str, str]:
        rendered, _ = self.renderer.render_or_fallback(
            f"{self.kind}/digest",
            chunk[0],
            incidents=chunk,
            storm_incidents=len(storm),
            storm_alerts=sum(len(v.firing) for v in storm),
            part=part,
            parts=parts,
        )
        return rendered

    def digest_fits(self, parts: dict[str, str]) -> bool:
        """Whether a rendered digest goes out as one message of this channel whole."""
        return True

    @abstractmethod
    async def send(self, msg: Message) -> Delivery:
        """Send the incident as a new message; Delivered(ref) names it for later edits."""

    async def update(self, msg: Message, ref: str) -> Delivery:
        """Bring the incident's message up to date; channels that cannot edit send anew."""
        return await self.send(msg)

    @abstractmethod
    async def send_digest(self, digest: Digest) -> Delivery:
        """Send a digest (several incidents in one message, the storm guard's)."""

    async def aclose(self) -> None:
        """Close the client's connections; the channel is not used after."""
        return None


AnyChannel = Channel[Any]
