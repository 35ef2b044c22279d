"""Delivery on every replica (issue 17): SIGKILL the replica that is sending a notification
(Slack holds its request); the other replica sends it once the dead one's claim lease ran out,
and counts the takeover in /metrics."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.store.postgres import CLAIM_LEASE

from ..harness import Fakes
from ..replicas import HEADERS, Replicas, RoundRobin, replica_config
from .test_replicas import payload

pytestmark = pytest.mark.slow

SLACK = """
  - name: main
    slack_configs: [{bot_token: xoxb-good, channel: "#alerts", api_url: SLACK}]
"""
HELD = 120.0  # seconds Slack's fake holds each request while the replica sending it is killed


async def takeovers(session: aiohttp.ClientSession, url: str) -> float:
    """claim_takeovers_total of Slack's destination on the replica at `url`."""
    async with session.get(f"{url}/metrics", headers=HEADERS) as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "alert_router_claim_takeovers_total" and sample.labels == {
                "receiver": "main",
                "channel": "slack",
            }:
                return sample.value
    raise AssertionError(f"no claim_takeovers_total for main/slack in\n{text}")


async def test_a_killed_replicas_claimed_notification_is_sent_by_another_after_its_lease(
    fakes: Fakes, tmp_path: Path, postgres_url: str
) -> None:
    config = replica_config(postgres_url, SLACK, fakes=fakes)
    db = await asyncpg.connect(postgres_url)
    try:
        async with Replicas(tmp_path, config, 2) as replicas, aiohttp.ClientSession() as session:
            fakes.slack.delay_s = HELD
            await RoundRobin(replicas, session).post(payload(0))
            await replicas.wait_for(
                lambda: fakes.slack.calls, "the send reached Slack", CLAIM_LEASE
            )
            claimed_by = await db.fetchval("SELECT claimed_by FROM outbox WHERE state='sending'")
            pid = int(claimed_by.split(":")[1])
            [sender] = [i for i, r in enumerate(replicas.replicas) if r.proc and r.proc.pid == pid]
            survivor = replicas[1 - sender]
            fakes.slack.delay_s = 0
            assert await replicas.kill(sender) == -9  # its claim stays in the database

            async def sent() -> bool:
                state = await db.fetchval("SELECT state FROM outbox")
                return state == "sent" and len(fakes.slack.posts()) >= 1

            # The claim is taken over once the dead replica's lease ran out: within the lease
            # after its last renewal, plus a poll; bounded with room for a loaded machine.
            await replicas.wait_for(sent, "sent by the other replica", CLAIM_LEASE * 4)
            assert await db.fetchval("SELECT claimed_by FROM outbox") != claimed_by
            assert await takeovers(session, survivor.url) == 1
            assert len(survivor.events("claim_taken_over")) == 1
    finally:
        await db.close()
