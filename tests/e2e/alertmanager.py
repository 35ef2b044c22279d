"""Start Debian's real Alertmanager on loopback for a test, and stop it after."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from ..helpers import free_port, require_binary, wait_http

MINIMAL = """
route:
  receiver: "null"
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: "null"
"""


@asynccontextmanager
async def running_alertmanager(workdir: Path, config: str = MINIMAL) -> AsyncIterator[str]:
    """Yields the base URL of a fresh Alertmanager (no clustering, state in workdir)."""
    binary = require_binary("prometheus-alertmanager")
    port = free_port()
    (workdir / "alertmanager.yml").write_text(config)
    url = f"http://127.0.0.1:{port}"
    with open(workdir / "alertmanager.log", "ab") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'alertmanager.yml'}",
                f"--storage.path={workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                f"--web.external-url={url}",
            ],
            stdout=log,
            stderr=log,
        )
    try:
        await wait_http(f"{url}/-/ready", proc, timeout_s=20)
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
