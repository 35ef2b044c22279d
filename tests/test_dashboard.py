"""The Grafana dashboard in deploy/grafana/: a real Prometheus (Debian's) scrapes a running router
that has seen traffic, and every panel's query answers with data; the shipped alert rules load
and evaluate there too. The provisioning files point at what the compose stack mounts."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from .harness import Fakes, firing_payload
from .helpers import ROOT, free_port, require_binary, wait_http

pytestmark = pytest.mark.slow

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "alert-router.json"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "alert-router.rules.yml"
TOKEN = "dashboard-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
# What Grafana puts in for the dashboard's variables: all instances, and a rate window (Grafana's
# $__rate_interval is at least 4 scrapes; 5m holds the whole test, however slow the machine).
VARIABLES = {"$__rate_interval": "5m", "$instance": ".*"}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with the variables put in) for every target of every panel."""
    out = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((panel["title"], expr))
    return out


def test_dashboard_covers_the_router_and_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] == "alert-router"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    exprs = " ".join(expr for _, expr in queries())
    for (
        metric
    ) in (  # intake, backlog, planning, deliveries, failures, dead letters, latency, reloads
        "payloads_received_total",
        "payloads_rejected_total",
        "intake_backlog",
        "plan_failures_total",
        "decisions_total",
        "notifications_sent_total",
        "notifications_retried_total",
        "notifications_dead_total",
        "delivery_latency_seconds_bucket",
        "outbox_oldest_age_seconds",
        "config_last_reload_successful",
    ):
        assert f"alert_router_{metric}" in exprs, metric
    assert "by (receiver, channel)" in exprs


def test_runbooks_name_panels_that_exist() -> None:
    titles = {p["title"] for p in panels()}
    for runbook in sorted((ROOT / "docs" / "runbooks").glob("*.md")):
        [line] = [x for x in runbook.read_text().splitlines() if x.startswith("**Dashboard.**")]
        named = re.findall(r'"([^"]+)"', line)
        assert named and set(named) <= titles, (runbook.name, set(named) - titles)


def test_provisioning_matches_the_compose_stack() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    mounts = dict(
        v.removesuffix(":ro").split(":", 1)
        for v in compose["services"]["grafana"]["volumes"]
        if v.startswith("./")
    )
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "alert-router.yml").read_text()
    )["providers"]
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    [source] = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 20 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def router_process(fakes: Fakes, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """alert-router serving on a free loopback port, delivering to the
    fakes: receiver `main` reaches Telegram; `broken` has a chat Telegram does not know (dead
    letters) and a Slack that refuses connections (retries)."""
    port = free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(f"""
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: {TOKEN}}}}}
storage: {{path: "{tmp_path / "state.db"}"}}
delivery: {{min_backoff: 50ms, max_backoff: 1s}}
receivers:
  - name: main
    telegram_configs: [{{bot_token: "123456:good-token", chat_id: 1001, api_url: "{fakes.urls["telegram"]}"}}]
  - name: broken
    telegram_configs: [{{bot_token: "123456:good-token", chat_id: 999, api_url: "{fakes.urls["telegram"]}"}}]
    slack_configs: [{{bot_token: xoxb-good, channel: "#alerts", api_url: "{fakes.urls["refused"]}/api/"}}]
route:
  receiver: main
  routes: [{{matchers: ['group="broken"'], receiver: broken}}]
""")
    with open(tmp_path / "router.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "TMPDIR": str(tmp_path)},  # its private socket folder goes here
        )
    try:
        yield port, proc
    finally:
        stop(proc)


@pytest.fixture
def prometheus(
    router_process: tuple[int, subprocess.Popen[bytes]], tmp_path: Path
) -> Iterator[str]:
    """Debian's Prometheus scraping the router every second, with the shipped rules; its URL.
    The process is stopped and its data folder removed afterwards."""
    binary = require_binary("prometheus")
    port = free_port()
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: alert-router
    static_configs: [{{targets: ["127.0.0.1:{router_process[0]}"]}}]
""")
    with open(folder / "prometheus.log", "ab") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        shutil.rmtree(folder / "data", ignore_errors=True)


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", (promql, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one series with a number (histogram_quantile gives NaN without observations)."""
    return any(math.isfinite(float(series["value"][1])) for series in result)


async def send_traffic(session: aiohttp.ClientSession, router: str) -> None:
    """Alerts for both receivers, an Alertmanager re-send, a resolve, and one refused request."""
    for body in (
        firing_payload(3, "web"),
        firing_payload(3, "web"),  # re-sent unchanged: deduplicated
        firing_payload(2, "broken"),
    ):
        async with session.post(f"{router}/webhook", data=body, headers=HEADERS) as resp:
            assert resp.status == 200, await resp.text()
    resolved = json.loads(firing_payload(3, "web"))
    resolved["status"] = "resolved"
    for alert in resolved["alerts"]:
        alert["status"] = "resolved"
        alert["endsAt"] = "2026-01-01T00:00:00Z"
    async with session.post(
        f"{router}/webhook", data=json.dumps(resolved).encode(), headers=HEADERS
    ) as resp:
        assert resp.status == 200, await resp.text()
    async with session.post(f"{router}/webhook", data=b"{}") as resp:
        assert resp.status == 401


async def test_every_panel_query_returns_data_from_a_real_prometheus(
    router_process: tuple[int, subprocess.Popen[bytes]], prometheus: str, tmp_path: Path
) -> None:
    port, proc = router_process
    router = f"http://127.0.0.1:{port}"
    # bounds for a loaded machine
    await wait_http(f"{router}/readyz", proc, timeout_s=60, log=tmp_path / "router.log")
    await wait_http(
        f"{prometheus}/-/ready", timeout_s=60, log=tmp_path / "prometheus/prometheus.log"
    )
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def scrapes() -> float:
            result = await query(session, prometheus, 'count_over_time(up{job="alert-router"}[5m])')
            return float(result[0]["value"][1]) if result else 0.0

        deadline = loop.time() + 60  # every wait below is bounded by this
        while await scrapes() < 1 and loop.time() < deadline:
            await asyncio.sleep(0.2)
        # The series are there before the traffic (at 0), as in production: rate() sees it.
        first = await scrapes()
        assert first >= 1
        await send_traffic(session, router)
        missing = [title for title, _ in queries()]
        while loop.time() < deadline:
            if await scrapes() >= first + 2:
                missing = [
                    f"{title}: {expr}"
                    for title, expr in queries()
                    if not has_data(await query(session, prometheus, expr))
                ]
                if not missing:
                    break
            await asyncio.sleep(0.5)
        assert not missing, missing

        up = await query(session, prometheus, 'up{job="alert-router"}')
        assert [float(s["value"][1]) for s in up] == [1.0]
        # The instance variable's values, as Grafana asks for them.
        async with session.get(
            f"{prometheus}/api/v1/label/instance/values",
            params={"match[]": "alert_router_build_info"},
        ) as resp:
            assert (await resp.json())["data"] == [f"127.0.0.1:{port}"]
        # Traffic shows where it should: the broken receiver's dead letter and retries.
        dead = await query(
            session, prometheus, 'alert_router_notifications_dead_total{receiver="broken"}'
        )
        assert {s["metric"]["channel"]: float(s["value"][1]) for s in dead}["telegram"] >= 1
        # The shipped rules load and evaluate without error on the router's real series.
        async with session.get(f"{prometheus}/api/v1/rules") as resp:
            groups = (await resp.json())["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        shipped = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
        assert len(rules) == len(shipped) and all(r["health"] in ("ok", "unknown") for r in rules)
