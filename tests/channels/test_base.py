"""router/channels/base.py: what every channel inherits: rendering (templates, plain text),
digests cut to what one message holds, an edit sent anew where a channel cannot edit, and which
reasons must reach someone again. test_contract.py runs each real channel against its fake."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from router.channels.base import (
    ALERTING,
    Channel,
    Delivered,
    Delivery,
    Digest,
    Failed,
    Message,
    RetryLater,
)
from router.models import IncidentView, Reason
from router.render import Renderer

from ..incidents import alert, incident


class Config(BaseModel):
    most_per_digest: int = 1_000


class Recording(Channel[Config]):
    """A channel of kind telegram (its templates) that keeps what it is asked to send, and
    whose digest holds at most `config.most_per_digest` incidents."""

    kind = "telegram"

    def __init__(self, config: Config, renderer: Renderer) -> None:
        super().__init__(config, renderer)
        self.sent: list[Message] = []
        self.fits_asked = 0

    async def send(self, msg: Message) -> Delivery:
        self.sent.append(msg)
        return Delivered(f"ref-{len(self.sent)}")

    async def send_digest(self, digest: Digest) -> Delivery:
        return Failed("not used")

    def digest_fits(self, parts: dict[str, str]) -> bool:
        self.fits_asked += 1
        return parts["message"].count("/ack ") <= self.config.most_per_digest


def views(n: int) -> list[IncidentView]:
    return [incident(alert(n=i), id=f"i{i:04d}") for i in range(n)]


@pytest.mark.parametrize("reason", list(Reason))
def test_which_notifications_must_ping(reason: Reason) -> None:
    message = Message(incident(alert(), reason=reason), {})
    expected = reason in {Reason.FIRST, Reason.NEW_ALERTS, Reason.REPEAT, Reason.UNINHIBITED}
    assert message.alerting is expected and (reason in ALERTING) is expected


def test_the_results_are_plain_values() -> None:
    assert Delivered("r") == Delivered("r") and RetryLater(None, "x") != RetryLater(None, "y")
    with pytest.raises(AttributeError):
        Delivered("r").ref = "s"  # type: ignore[misc]


def test_render_uses_the_kinds_templates_and_render_plain_the_built_in_text() -> None:
    channel = Recording(Config(), Renderer())
    view = incident(alert())
    rendered = channel.render(view)
    assert rendered.parts == Renderer().render("telegram", view)
    assert (rendered.template_error, rendered.plain, rendered.view) == (None, False, view)
    plain = channel.render_plain(view)
    assert plain.plain is True and plain.parts == Renderer().fallback("telegram", view)
    assert channel.min_interval().total_seconds() == 0 and channel.moves == {}


async def test_an_update_is_a_new_message_unless_the_channel_edits() -> None:
    channel = Recording(Config(), Renderer())
    msg = channel.render(incident(alert(), reason=Reason.ACKED))
    assert await channel.update(msg, "ref-earlier") == Delivered("ref-1")
    assert channel.sent == [msg]
    assert await channel.aclose() is None


@pytest.mark.parametrize(
    ("storm", "most", "sizes"),
    [
        (1, 5, [1]),
        (5, 5, [5]),
        (6, 5, [5, 1]),
        (23, 5, [5, 5, 5, 5, 3]),
        (40, 7, [7, 7, 7, 7, 7, 5]),
        (3, 0, [1, 1, 1]),  # one incident per message even if it does not fit
    ],
)
def test_digests_hold_as_many_as_fit_in_order(storm: int, most: int, sizes: list[int]) -> None:
    channel = Recording(Config(most_per_digest=most), Renderer())
    digests = channel.render_digests(views(storm))
    assert [len(d.views) for d in digests] == sizes
    assert [v.id for d in digests for v in d.views] == [f"i{i:04d}" for i in range(storm)]
    for n, digest in enumerate(digests, start=1):
        header = digest.parts["message"].splitlines()[0]
        assert f"{storm} incident" in header
        if len(digests) > 1:
            assert f"message {n} of {len(digests)}" in header


def test_a_digest_size_is_found_without_trying_every_size() -> None:
    channel = Recording(Config(most_per_digest=37), Renderer())
    digests = channel.render_digests(views(200))
    assert [len(d.views) for d in digests] == [37] * 5 + [15]
    assert channel.fits_asked <= 6 * 14  # doubling then bisecting: ~2 log2(n) per message


def test_a_digest_names_each_incident_once_with_its_latest_view() -> None:
    first = views(3)
    acked = first[1].model_copy(update={"acked_by": "alice", "reason": Reason.ACKED})
    [digest] = Recording(Config(), Renderer()).render_digests([*first, acked])
    assert digest.views == [first[0], acked, first[2]]
