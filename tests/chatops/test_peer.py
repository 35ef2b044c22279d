"""Chat-ops rejections are logged with the client's address (a real `alert-router serve`)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest

from ..e2e.test_process import SIGNING, running
from ..harness import Fakes
from ..helpers import slack_signed

pytestmark = pytest.mark.slow


def logged(path: Path, name: str) -> list[dict[str, str]]:
    """The fields of each `name` event in the router's text log ("12:00:00 WARNING name k=v")."""
    found = []
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) >= 3 and parts[2] == name:
            fields = parts[3] if len(parts) == 4 else ""
            found.append(dict(re.findall(r"(\w+)=(.*?)(?= \w+=|$)", fields)))
    return found


async def test_rejections_name_the_client_address(fakes: Fakes, tmp_path: Path) -> None:
    form = urlencode(
        {"command": "/ack", "text": "help", "team_id": "T1", "channel_id": "C2", "user_id": "U1"}
    ).encode()
    async with running(fakes, tmp_path) as (_, base, _port), aiohttp.ClientSession() as session:
        forged = {**slack_signed(form, SIGNING), "X-Slack-Signature": "v0=" + "0" * 64}
        headers = slack_signed(form, SIGNING)
        for sent, status in ((forged, 401), (headers, 200), (headers, 401)):
            async with session.post(f"{base}/slack/commands", data=form, headers=sent) as r:
                assert r.status == status, await r.text()
    log = tmp_path / "router.log"
    rejected = logged(log, "slack_request_rejected")
    assert [(x["reason"], x["peer"]) for x in rejected] == [
        ("bad or stale signature", "127.0.0.1"),
        ("replayed", "127.0.0.1"),
    ]
    [refused] = logged(log, "chatops_refused")
    assert (refused["peer"], refused["team"], refused["place"]) == ("127.0.0.1", "T1", "C2")
