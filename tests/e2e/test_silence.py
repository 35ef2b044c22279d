"""/ack <id> 2h creates a silence in a real Alertmanager, which then silences the incident's alerts;
the silence links of messages prefill silences that select their alert."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from router.enrich import silence_url

from ..amui import filter_of, parse_filter
from ..chatops.test_slack import CHATOPS, RECEIVERS, command, slash
from ..harness import Fakes, firing_payload, post, settled
from ..test_enrich import AWKWARD_VALUES
from .alertmanager import running_alertmanager

_UNWRITTEN = re.compile('[\\\\"^\x00-\x1f]')


async def test_ack_with_a_duration_silences_in_alertmanager(
    fakes: Fakes, make_client: Any, tmp_path: Path
) -> None:
    async with running_alertmanager(tmp_path) as am, aiohttp.ClientSession() as http:
        client = await make_client(fakes, RECEIVERS, CHATOPS + f"  alertmanager_url: {am}\n")
        body = firing_payload(2, "silence-me")
        incident = (await post(client, body))["incidents"][0]
        await settled(client)

        # The same alerts, as Prometheus would have posted them to Alertmanager.
        alerts = [
            {
                "labels": a["labels"],
                "annotations": a["annotations"],
                "generatorURL": "http://prom/g",
                "startsAt": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
            }
            for a in orjson.loads(body)["alerts"]
        ]
        async with http.post(f"{am}/api/v2/alerts", json=alerts) as resp:
            assert resp.status == 200

        status, answer = await command(client, slash(f"{incident} 2h disk cleanup running"))
        assert status == 200 and answer["response_type"] == "in_channel"
        assert "Silenced in Alertmanager for 2h (silence " in answer["text"]
        silence_id = answer["text"].rsplit("(silence ", 1)[1].rstrip(").")

        async with http.get(f"{am}/api/v2/silence/{silence_id}") as resp:
            silence = await resp.json()
        assert silence["status"]["state"] == "active"
        assert silence["createdBy"] == "@bob"
        assert (
            silence["comment"]
            == f"alert-router incident #{incident} acknowledged via slack: disk cleanup running"
        )
        assert {m["name"]: m["value"] for m in silence["matchers"]} == {
            "alertname": "HighLatency",
            "severity": "critical",
            "group": "silence-me",
        }
        ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00"))
        assert timedelta(hours=1, minutes=59) < ends - datetime.now(UTC) <= timedelta(hours=2)

        for _ in range(100):  # Alertmanager marks the alerts silenced within a moment
            async with http.get(
                f"{am}/api/v2/alerts", params={"silenced": "true", "active": "false"}
            ) as resp:
                silenced = [
                    a for a in await resp.json() if a["status"]["silencedBy"] == [silence_id]
                ]
            if len(silenced) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(silenced) == 2

        await settled(client)
        incidents = await (
            await client.get("/api/v1/incidents", headers={"Authorization": "Bearer t"})
        ).json()
        assert incidents["incidents"][0]["acked_by"] == "@bob"


async def test_an_unreachable_alertmanager_still_acks_and_says_so(
    fakes: Fakes, make_client: Any
) -> None:
    from ..helpers import free_port

    client = await make_client(
        fakes, RECEIVERS, CHATOPS + f"  alertmanager_url: http://127.0.0.1:{free_port()}\n"
    )
    incident = (await post(client, firing_payload(1, "no-am")))["incidents"][0]
    _, answer = await command(client, slash(f"{incident} 30m"))
    assert answer["text"].startswith(
        f"✅ #{incident} acknowledged by @bob. Reminders and escalation stop. "
        "The silence could not be created: http://127.0.0.1:"
    )


async def test_silence_links_silence_their_alert_in_a_real_alertmanager(tmp_path: Path) -> None:
    """Each awkward label value: the link's matchers, as both UI generations read them, make a
    silence that Alertmanager applies to that alert and not to its neighbour."""
    async with running_alertmanager(tmp_path) as am, aiohttp.ClientSession() as http:
        starts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        ends = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        # Each value's neighbours: one longer, and one of the same length with each character
        # the link cannot write as itself replaced by "/" (which no regex class of it matches).
        cases = [
            (
                {"alertname": "LinkCheck", "case": str(i), "value": v},
                sorted({v + "x", _UNWRITTEN.sub("/", v)} - {v}),
            )
            for i, v in enumerate(AWKWARD_VALUES)
        ]
        alerts = [
            {"labels": {**labels, "value": value}, "startsAt": starts}
            for labels, others in cases
            for value in (labels["value"], *others)
        ]
        async with http.post(f"{am}/api/v2/alerts", json=alerts) as resp:
            assert resp.status == 200, await resp.text()

        silence_of: dict[str, str] = {}
        for labels, _ in cases:
            text = filter_of(silence_url(am, labels))
            matchers = parse_filter(text, json_strings=False)
            assert matchers == parse_filter(text, json_strings=True)
            silence = {
                "matchers": matchers,
                "startsAt": starts,
                "endsAt": ends,
                "createdBy": "test",
                "comment": "from the link",
            }
            async with http.post(f"{am}/api/v2/silences", json=silence) as resp:
                assert resp.status == 200, (labels, await resp.text())
                silence_of[labels["case"]] = (await resp.json())["silenceID"]

        expected = {
            (labels["case"], labels["value"]): [silence_of[labels["case"]]] for labels, _ in cases
        } | {(labels["case"], other): [] for labels, others in cases for other in others}
        for _ in range(100):  # Alertmanager marks the alerts silenced within a moment
            async with http.get(f"{am}/api/v2/alerts", params={"active": "true"}) as resp:
                got = {
                    (a["labels"]["case"], a["labels"]["value"]): a["status"]["silencedBy"]
                    for a in await resp.json()
                    if a["labels"].get("alertname") == "LinkCheck"
                }
            if got == expected:
                break
            await asyncio.sleep(0.1)
        assert got == expected
