"""Paths and small helpers shared by the tests."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
FIXTURES = DATA / "alertmanager"


# The Debian package that ships each binary the suite runs.
DEBIAN_PACKAGE = {
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "promtool": "prometheus",
    "prometheus": "prometheus",
}


def require_binary(name: str) -> str:
    """The path of a Debian-packaged binary; skip locally if missing, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        package = DEBIAN_PACKAGE.get(name, name)
        message = (
            f"{name} not found: install Debian's {package} "
            f"(make deps, or apt-get install {package})"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def fixture_body(name: str) -> bytes:
    """The exact bytes Alertmanager 0.25 sent for a captured payload."""
    return (FIXTURES / "raw" / f"{name}.body").read_bytes()


def fixture_json(name: str) -> dict[str, object]:
    data: dict[str, object] = orjson.loads((FIXTURES / f"{name}.json").read_bytes())
    return data


def waiting_in_inbox(store_path: Path) -> list[str]:
    """Correlation ids in the inbox after the store's watermark: accepted, not planned yet."""
    with sqlite3.connect(store_path) as db:
        (through,) = db.execute("SELECT through FROM inbox_planned").fetchone()
    with sqlite3.connect(f"{store_path}.inbox") as db:
        rows = db.execute("SELECT correlation_id FROM inbox WHERE id>? ORDER BY id", (through,))
        return [r[0] for r in rows]


def slack_signed(body: bytes, secret: str, age_s: float = 0) -> dict[str, str]:
    """Headers as Slack sends them: v0 HMAC-SHA256 over "v0:<timestamp>:<body>"."""
    ts = str(int(time.time() - age_s))
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_http(url: str, proc: object = None, timeout_s: float = 15.0) -> None:
    """Poll url until it answers 200; fail early if the process `proc` (Popen) exited."""
    import asyncio
    import subprocess

    import aiohttp

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            if isinstance(proc, subprocess.Popen) and proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode} (see its log)")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout_s}s")


async def planned_outcome(
    session: Any, base_url: str, correlation_id: str, headers: dict[str, str]
) -> dict[str, Any]:
    """GET /api/v1/payloads/<id> from a running router until the payload is planned (10 s)."""
    import asyncio

    url = f"{base_url}/api/v1/payloads/{correlation_id}"
    for _ in range(1000):
        async with session.get(url, headers=headers) as resp:
            outcome: dict[str, Any] = await resp.json()
        if outcome["state"] != "pending":
            return outcome
        await asyncio.sleep(0.01)
    raise AssertionError(f"{correlation_id} not planned in 10 s")
