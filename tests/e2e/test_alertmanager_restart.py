"""SIGKILL alert-router while Debian's Alertmanager is sending, start it again: Alertmanager's
retries plus the outbox bring every alert to its channels; Alertmanager's re-sends are not
notified twice, and only a delivery in flight at the kill can be repeated (at-least-once)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ..harness import Fakes
from ..helpers import free_port, wait_http
from .alertmanager import running_alertmanager
from .test_alertmanager_e2e import AM_CONFIG, eventually, until
from .test_process import TOKEN, start, stop

pytestmark = pytest.mark.slow
GROUPS, PER_GROUP = 8, 4


async def test_sigkill_while_alertmanager_sends(fakes: Fakes, tmp_path: Path) -> None:
    fakes.pagerduty.delay_s = 0.3  # deliveries are in flight when the router dies
    fakes.telegram.flood_interval_s = 0
    port = free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(f"""
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: {TOKEN}}}}}
storage: {{path: state.db}}
delivery: {{min_backoff: 100ms, max_backoff: 1s, storm_threshold: 1000}}
receivers:
  - name: pager
    pagerduty_configs: [{{routing_key: R0UTINGKEY0000000000000000000000, url: "{fakes.urls["pagerduty"]}/v2/enqueue"}}]
    telegram_configs: [{{bot_token: "123456:good-token", chat_id: 1001, api_url: "{fakes.urls["telegram"]}"}}]
route: {{receiver: pager}}
""")
    am_config = AM_CONFIG.format(url=f"http://127.0.0.1:{port}/webhook", token=TOKEN)
    router = start(config)
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", router)
        async with running_alertmanager(tmp_path, am_config) as am, aiohttp.ClientSession() as http:
            now = datetime.now(UTC)

            def alert(g: int, instance: str) -> dict[str, object]:
                return {
                    "labels": {
                        "alertname": f"Load{g}",
                        "service": f"svc{g}",
                        "instance": instance,
                        "severity": "critical",
                    },
                    "annotations": {"summary": f"load {g}/{instance}"},
                    "startsAt": (now - timedelta(minutes=1)).isoformat(),
                    "endsAt": (now + timedelta(minutes=10)).isoformat(),
                    "generatorURL": "",
                }

            alerts = [alert(g, f"i{i}") for g in range(GROUPS) for i in range(PER_GROUP)]
            async with http.post(f"{am}/api/v2/alerts", json=alerts) as resp:
                assert resp.status == 200
            # Kill it as soon as the first deliveries are under way.
            await eventually(
                lambda: len(fakes.pagerduty.events) >= 1 or len(fakes.telegram.messages) >= 2, 20
            )
            tries = await am_tries(http, am)
            router.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(router.wait, 10) == -signal.SIGKILL
            delivered_before = len(fakes.pagerduty.events)
            assert delivered_before < GROUPS, "the kill should land while deliveries are pending"

            # Alertmanager flushes its groups (and its webhook calls fail) while the router is down.
            async def am_tried() -> bool:
                return await am_tries(http, am) >= tries + GROUPS

            await until(am_tried)
            router = start(config)
            await wait_http(f"http://127.0.0.1:{port}/healthz", router)

            def is_marker(e: dict[str, Any]) -> bool:
                firing = e["payload"]["custom_details"]["firing"]
                return any(a["labels"]["instance"] == "marker" for a in firing)

            def heading(message: Any) -> str:  # the first line, without its count of alerts
                return str(message.text.split("\n", 1)[0].split(" ×", 1)[0])

            def originals() -> list[Any]:
                return [m for m in fakes.telegram.messages.values() if m.reply_to is None]

            def all_in() -> bool:
                triggers = [e for e in fakes.pagerduty.events if e["event_action"] == "trigger"]
                latest = {e["dedup_key"]: e for e in triggers}
                complete = {heading(m) for m in originals() if f"×{PER_GROUP}" in m.text}
                return (
                    len(latest) == GROUPS
                    and all(
                        len(e["payload"]["custom_details"]["firing"]) == PER_GROUP
                        for e in latest.values()
                    )
                    and len(complete) >= GROUPS
                )

            await eventually(all_in, 40)
            # Nothing more may come from what was sent before: each group gets one more alert,
            # a marker. Alertmanager flushes a group's notifications one after the other (its
            # retries included), and the router plans in arrival order and sends a destination's
            # notifications in order, so once every group's marker has reached both channels and
            # the outbox is empty, whatever the earlier sends caused has arrived before.
            async with http.post(
                f"{am}/api/v2/alerts", json=[alert(g, "marker") for g in range(GROUPS)]
            ) as resp:
                assert resp.status == 200

            def markers_in() -> bool:
                marked = {e["dedup_key"] for e in fakes.pagerduty.events if is_marker(e)}
                shown = {heading(m) for m in originals() if f"×{PER_GROUP + 1}" in m.text}
                return len(marked) == GROUPS and len(shown) == GROUPS

            await eventually(markers_in, 40)
            metrics = f"http://127.0.0.1:{port}/metrics"

            async def router_idle() -> bool:
                return await router_waiting(http, metrics) == 0

            await until(router_idle)

            triggers = [
                e
                for e in fakes.pagerduty.events
                if e["event_action"] == "trigger" and not is_marker(e)
            ]
            first_messages = originals()
            # Nothing lost: every group reached both channels, and showed all its alerts before
            # the marker came. (Alertmanager may flush a group before all its alerts are in;
            # the router then notifies "new alerts": a second trigger for the dedup_key, an edit
            # and a reply.)
            assert len({e["dedup_key"] for e in triggers}) == GROUPS
            latest = {e["dedup_key"]: e for e in triggers}
            assert all(
                len(e["payload"]["custom_details"]["firing"]) == PER_GROUP for e in latest.values()
            )
            assert len({heading(m) for m in first_messages}) == GROUPS
            # Each group's message ends showing all its alerts (the marker included now).
            complete = {heading(m) for m in first_messages if f"×{PER_GROUP + 1}" in m.text}
            assert len(complete) == GROUPS
            # Alertmanager's retries of what the router had committed were not notified again; the
            # only same-state repeats are deliveries in flight at the kill (accepted by the
            # service, not yet recorded): at most one per destination, identical, so PagerDuty's
            # dedup_key makes it one page.
            same_state = Counter(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in triggers)
            assert sum(n - 1 for n in same_state.values()) <= 1, same_state
            first_lines = Counter(heading(m) for m in first_messages)
            assert sum(n - 1 for n in first_lines.values()) <= 1, first_lines
    finally:
        stop(router)


def samples(text: str, *names: str) -> float:
    """The sum of every sample of the named metrics in a Prometheus text exposition."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.split("{", 1)[0].split(" ", 1)[0] in names
    )


async def am_tries(http: aiohttp.ClientSession, am: str) -> float:
    """How often Alertmanager has acted on its groups so far: each flush queries its
    notification log once, each failed webhook call is counted (Alertmanager 0.25's metrics)."""
    async with http.get(f"{am}/metrics") as resp:
        text = await resp.text()
    return samples(
        text, "alertmanager_nflog_queries_total", "alertmanager_notification_requests_failed_total"
    )


async def router_waiting(http: aiohttp.ClientSession, metrics_url: str) -> float:
    """Payloads not yet planned plus notifications queued or being sent, from /metrics."""
    async with http.get(metrics_url) as resp:
        text = await resp.text()
    return samples(text, "alert_router_intake_backlog", "alert_router_outbox_depth")
