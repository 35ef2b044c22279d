"""Upgrade in place: the previous version (two processes, the inbox in `<store>.inbox`) killed
with payloads accepted and not planned; this version, started on its store, plans each once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from ..helpers import free_port, wait_http
from .test_crash import CONFIG, HEADERS, payload, serve, stop

pytestmark = pytest.mark.slow

# The last commit before issue 16 (one process, the inbox a table of the store's file).
PREVIOUS = "03ffc1b6b0b08f14575f075c1b62a30ea292a8ff"
REPO = Path(__file__).resolve().parents[2]
ARGS = ["--dry-run", "--log-level", "warning"]
PLANNED_FIRST, WAITING = 20, 200  # payloads planned by the previous version, then left waiting


def previous_version(folder: Path) -> Path:
    """PREVIOUS's `router` and `templates` extracted into `folder`; skips without git history."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to extract the previous version")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS, "router", "templates"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {PREVIOUS} is not in this clone: {archive.stderr.decode()[:200]}")
    folder.mkdir()
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    # The previous version named its processes with setproctitle, a dependency this one dropped:
    # a fresh install has not got it, and the names do not matter here.
    (folder / "setproctitle.py").write_text("def setproctitle(title: str) -> None:\n    pass\n")
    return folder


async def post(url: str, numbers: range) -> dict[int, str]:
    """Post payloads 8 at a time; payload number -> correlation id of each answered 200."""
    accepted: dict[int, str] = {}
    queue = list(numbers)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def worker() -> None:
            while queue:
                n = queue.pop(0)
                async with session.post(url, data=payload(n), headers=HEADERS) as resp:
                    assert resp.status == 200, await resp.text()
                    accepted[n] = (await resp.json())["correlation_id"]

        await asyncio.gather(*(worker() for _ in range(8)))
    return accepted


async def test_payloads_waiting_in_the_previous_versions_inbox_file_are_planned_once(
    tmp_path: Path,
) -> None:
    old = previous_version(tmp_path / "previous")
    run = tmp_path / "run"
    run.mkdir()
    db = run / "state.db"
    port = free_port()
    config = run / "routes.yaml"
    config.write_text(CONFIG.format(port=port, db=db))
    url = f"http://127.0.0.1:{port}/webhook"
    with open(run / "previous.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(config), *ARGS],
            cwd=old,
            env={**os.environ, "PYTHONPATH": str(old)},
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its intake process and supervisor: one group to kill
        )
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", proc, log=run / "previous.log")
        accepted = await post(url, range(PLANNED_FIRST))
        # The previous version plans in its main process; stopped, its intake process goes on
        # accepting into the inbox file: those payloads wait, unplanned, when it is killed.
        proc.send_signal(signal.SIGSTOP)
        accepted |= await post(url, range(PLANNED_FIRST, PLANNED_FIRST + WAITING))
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have failed to start
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with sqlite3.connect(db) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        (through,) = conn.execute("SELECT through FROM inbox_planned").fetchone()
    with sqlite3.connect(f"{db}.inbox") as inbox:
        (waiting,) = inbox.execute("SELECT count(*) FROM inbox WHERE id>?", (through,)).fetchone()
    assert version == 6
    assert waiting >= WAITING, "the previous version should have left payloads unplanned"

    proc, port = await serve(CONFIG, run, db=db)
    try:
        async with aiohttp.ClientSession() as session:
            deadline = asyncio.get_running_loop().time() + 60
            while asyncio.get_running_loop().time() < deadline:
                async with session.get(
                    f"http://127.0.0.1:{port}/api/v1/payloads/{accepted[PLANNED_FIRST + WAITING - 1]}",
                    headers=HEADERS,
                ) as resp:
                    if (await resp.json()).get("state") == "planned":
                        break
                await asyncio.sleep(0.1)
    finally:
        stop(proc)
    with sqlite3.connect(db) as conn:
        fingerprints = {r[0] for r in conn.execute("SELECT fingerprint FROM alerts")}
        outbox = conn.execute(
            "SELECT correlation_id, count(*) FROM outbox GROUP BY correlation_id"
        ).fetchall()
        (inbox_left,) = conn.execute("SELECT count(*) FROM inbox").fetchone()
    for n in accepted:
        assert {f"{n:08x}{k:08x}" for k in range(3)} <= fingerprints, f"payload {n} lost"
    assert dict(outbox) == {cid: 2 for cid in accepted.values()}, "each payload: 2, once"
    assert inbox_left == 0
    assert not list(run.glob("state.db.inbox*")), "the previous inbox file is removed"
