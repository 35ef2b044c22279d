"""SIGKILL alert-router while Debian's Alertmanager is sending, start it again: Alertmanager's
retries plus the outbox bring every alert to its channels; Alertmanager's re-sends are not
notified twice, and only a delivery in flight at the kill can be repeated (at-least-once)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
import pytest

from ..harness import Fakes
from ..helpers import free_port, wait_http
from .alertmanager import running_alertmanager
from .test_alertmanager_e2e import AM_CONFIG, eventually
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
            alerts = [
                {
                    "labels": {
                        "alertname": f"Load{g}",
                        "service": f"svc{g}",
                        "instance": f"i{i}",
                        "severity": "critical",
                    },
                    "annotations": {"summary": f"load {g}/{i}"},
                    "startsAt": (now - timedelta(minutes=1)).isoformat(),
                    "endsAt": (now + timedelta(minutes=10)).isoformat(),
                    "generatorURL": "",
                }
                for g in range(GROUPS)
                for i in range(PER_GROUP)
            ]
            async with http.post(f"{am}/api/v2/alerts", json=alerts) as resp:
                assert resp.status == 200
            # Kill it as soon as the first deliveries are under way.
            await eventually(
                lambda: len(fakes.pagerduty.events) >= 1 or len(fakes.telegram.messages) >= 2, 20
            )
            router.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(router.wait, 10) == -signal.SIGKILL
            delivered_before = len(fakes.pagerduty.events)
            assert delivered_before < GROUPS, "the kill should land while deliveries are pending"
            await asyncio.sleep(1.5)  # Alertmanager's webhook calls fail meanwhile
            router = start(config)
            await wait_http(f"http://127.0.0.1:{port}/healthz", router)

            def all_in() -> bool:
                triggers = {
                    e["dedup_key"] for e in fakes.pagerduty.events if e["event_action"] == "trigger"
                }
                return len(triggers) == GROUPS and len(fakes.telegram.messages) >= GROUPS

            await eventually(all_in, 40)
            await asyncio.sleep(
                3
            )  # Alertmanager keeps flushing every group_interval: nothing new may come
            triggers = [e for e in fakes.pagerduty.events if e["event_action"] == "trigger"]
            originals = [m for m in fakes.telegram.messages.values() if m.reply_to is None]
            # Nothing lost: every group reached both channels, and ends showing all its alerts.
            # (Alertmanager may flush a group before all its alerts are in; the router then
            # notifies "new alerts": a second trigger for the dedup_key, an edit and a reply.)
            assert len({e["dedup_key"] for e in triggers}) == GROUPS
            latest = {e["dedup_key"]: e for e in triggers}
            assert all(
                len(e["payload"]["custom_details"]["firing"]) == PER_GROUP for e in latest.values()
            )
            assert len({m.text.split("\n", 1)[0] for m in originals}) == GROUPS
            complete = {m.text.split("\n", 1)[0] for m in originals if f"×{PER_GROUP}" in m.text}
            assert len(complete) == GROUPS  # each group's message ends showing all its alerts
            # Alertmanager's retries of what the router had committed were not notified again; the
            # only same-state repeats are deliveries in flight at the kill (accepted by the
            # service, not yet recorded): at most one per destination, identical, so PagerDuty's
            # dedup_key makes it one page.
            same_state = Counter(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in triggers)
            assert sum(n - 1 for n in same_state.values()) <= 1, same_state
            first_lines = Counter(m.text.split("\n", 1)[0] for m in originals)
            assert sum(n - 1 for n in first_lines.values()) <= 1, first_lines
    finally:
        stop(router)
