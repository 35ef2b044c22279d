"""--dry-run: render with the channel's templates and log, instead of sending."""

from __future__ import annotations

import logging

from pydantic import BaseModel

from router.channels.base import Channel, Delivered, Delivery, Digest, Message
from router.logs import event
from router.render import Renderer
from router.state import Destination

log = logging.getLogger("router.delivery")


class DryRunChannel(Channel[BaseModel]):
    """Stands in for a real channel of kind `kind`; edits are logged as updates."""

    kind = "dry-run"

    def __init__(self, destination: Destination, config: BaseModel, renderer: Renderer) -> None:
        super().__init__(config, renderer)
        self.kind = destination.channel  # type: ignore[misc]
        self.destination = destination

    async def send(self, msg: Message) -> Delivery:
        """Log the rendered message (dry_run_notification); always Delivered."""
        self._log("dry_run_notification", msg, None)
        return Delivered(f"dry-run:{msg.view.id}")

    async def update(self, msg: Message, ref: str) -> Delivery:
        """Log the rendered edit of `ref` (dry_run_update); always Delivered."""
        self._log("dry_run_update", msg, ref)
        return Delivered(ref)

    async def send_digest(self, digest: Digest) -> Delivery:
        """Log the digest's parts and incidents (dry_run_digest); always Delivered."""
        event(
            log,
            logging.INFO,
            "dry_run_digest",
            destination=str(self.destination),
            incidents=[v.id for v in digest.views],
            **digest.parts,
        )
        return Delivered("")

    def _log(self, name: str, msg: Message, ref: str | None) -> None:
        event(
            log,
            logging.INFO,
            name,
            incident=msg.view.id,
            destination=str(self.destination),
            channel=f"{self.kind}[{self.destination.channel_index}]",
            reason=msg.view.reason.value,
            correlation_id=msg.view.correlation_id,
            **({"edits": ref} if ref else {}),
            **msg.parts,
        )
