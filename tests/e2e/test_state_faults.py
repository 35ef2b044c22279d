"""The state files under a running router: locked by one router only, deleted, full, unreadable,
and the backlog that waits in them. Real `alert-router serve` processes; what is asserted is
what Alertmanager, a load balancer and an operator see (HTTP answers, /readyz, /metrics, logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ..harness import firing_payload
from ..helpers import free_port, wait_http

pytestmark = pytest.mark.slow
HEADERS = {"Authorization": "Bearer t0ken", "Content-Type": "application/json"}
CONFIG = """
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: t0ken}}}}
storage: {{path: "{db}"}}
receivers:
  - name: chat
    slack_configs: [{{bot_token: xoxb-1, channel: "#c"}}]
route: {{receiver: chat}}
"""


class Router:
    """One `alert-router serve` process on its own port, logging JSON to router.log."""

    def __init__(self, tmp: Path, db: Path, name: str = "routes") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = tmp / f"{name}.yaml"
        self.config.write_text(CONFIG.format(port=self.port, db=db))
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "router",
                    "serve",
                    "--config",
                    str(self.config),
                    "--dry-run",
                    "--log-format",
                    "json",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self.proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def failed_start(self, timeout_s: float = 60) -> dict[str, Any]:
        """Start a router that must refuse to: it exits 1 (bounded wait) with no traceback in its
        log; the one startup_failed event it logged."""
        proc = self.start()
        try:
            assert proc.wait(timeout=timeout_s) == 1
        finally:
            self.stop()
        assert "Traceback" not in self.log.read_text()
        (failed,) = self.events("startup_failed")
        return failed

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                record = orjson.loads(line)
                if record.get("event") == name:
                    out.append(record)
        return out


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[Router]:
    r = Router(tmp_path, tmp_path / "state" / "state.db")
    r.start()
    try:
        await wait_http(f"{r.base}/readyz", r.proc, timeout_s=30)
        yield r
    finally:
        r.stop()


async def post(session: aiohttp.ClientSession, base: str, group: str) -> tuple[int, Any]:
    async with session.post(
        f"{base}/webhook", data=firing_payload(1, group), headers=HEADERS
    ) as resp:
        return resp.status, await resp.json()


async def readyz(session: aiohttp.ClientSession, base: str) -> tuple[int, Any]:
    async with session.get(f"{base}/readyz") as resp:
        return resp.status, await resp.json()


async def until(check: Any, timeout_s: float = 20.0) -> Any:
    """Call `check()` (async) every 0.1 s until it returns something truthy; fail after timeout."""
    for _ in range(int(timeout_s * 10)):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout_s}s")


# ------------------------------------------------------------------ one router per store


async def test_second_router_on_the_same_store_refuses_to_start(
    router: Router, tmp_path: Path
) -> None:
    second = Router(tmp_path, tmp_path / "state" / "state.db", name="second")
    failed = second.failed_start(timeout_s=30)
    assert "another alert-router" in failed["error"]
    assert f"{tmp_path}/state/state.db.lock" in failed["error"]
    assert "storage.path" in failed["error"]
    async with aiohttp.ClientSession() as session:  # the first one goes on, alone
        assert (await readyz(session, router.base))[0] == 200
        assert (await post(session, router.base, "still-here"))[0] == 200
    # Once the first one is gone, the store is free again.
    router.stop()
    proc = second.start()
    try:
        await wait_http(f"{second.base}/readyz", proc, timeout_s=30)
    finally:
        second.stop()


# ------------------------------------------------------------------ unreadable files


async def test_corrupt_file_names_itself_in_one_event_and_exit_1(tmp_path: Path) -> None:
    which = "state.db"
    r = Router(tmp_path, tmp_path / "state.db")
    r.start()
    try:
        await wait_http(f"{r.base}/readyz", r.proc, timeout_s=30)
    finally:
        r.stop()
    for name in os.listdir(tmp_path):  # the WAL and shared memory would be read first
        if name.endswith(("-wal", "-shm")):
            os.unlink(tmp_path / name)
    (tmp_path / which).write_bytes(b"this is not an SQLite database" * 200)
    r.log.write_text("")
    failed = r.failed_start(timeout_s=30)
    assert failed["level"] == "error"
    assert failed["error"].startswith(f"{tmp_path / which}: file is not a database")
    assert "move it aside" in failed["error"]


@pytest.mark.parametrize("content", ["foreign", "corrupt"])
async def test_an_unreadable_inbox_file_of_an_earlier_version_is_refused_at_start(
    tmp_path: Path, content: str
) -> None:
    # Earlier versions kept the inbox in `<store>.inbox`; the upgrade carries what waits there
    # into the store. Another program's SQLite file, or a corrupt one, at that path stops the
    # start, naming it (the router used to start, answer every webhook late, and log "no such
    # column: id" under the store's name every second).
    inbox = tmp_path / "state.db.inbox"
    if content == "foreign":
        with contextlib.closing(sqlite3.connect(inbox)) as db:
            db.execute("CREATE TABLE inbox (x)")
            db.commit()
        why = "not an alert-router inbox"
    else:
        inbox.write_bytes(b"this is not an SQLite database" * 200)
        why = "file is not a database"
    failed = Router(tmp_path, tmp_path / "state.db").failed_start()
    assert failed["error"].startswith(f"{inbox}: {why}")
    assert "move it aside" in failed["error"]
    assert inbox.exists()  # left for the operator to look at


async def test_port_in_use_is_one_event_and_exit_1(tmp_path: Path) -> None:
    r = Router(tmp_path, tmp_path / "state.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", r.port))
        taken.listen()
        failed = r.failed_start()
    assert failed["error"].startswith(f"cannot listen on 127.0.0.1:{r.port}: ")


async def test_storage_folder_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    failed = Router(tmp_path, tmp_path / "a-file" / "state.db").failed_start()
    assert failed["error"].startswith(f"{tmp_path}/a-file: File exists: storage.path must be")


# ------------------------------------------------------------------ a file deleted under it


async def test_deleted_state_file_refuses_webhooks_and_is_not_ready(
    router: Router, tmp_path: Path
) -> None:
    which = "state.db"
    async with aiohttp.ClientSession() as session:
        for n in range(5):
            assert (await post(session, router.base, f"before-{n}"))[0] == 200
        os.unlink(tmp_path / "state" / which)
        answers = [await post(session, router.base, f"after-{n}") for n in range(5)]
        assert [status for status, _ in answers] == [503] * 5
        assert {body["reason"] for _, body in answers} == {"store"}
        status, body = await readyz(session, router.base)
        assert status == 503
        # Deleted; or, if something opened the path again after the unlink (which makes a new
        # empty file), replaced: either way it is not the file that holds the state.
        path = f"{tmp_path}/state/{which}"
        losses = (f"{path} was deleted while", f"{path} was replaced by another file while")
        assert any(lost in reason for reason in body["reasons"] for lost in losses), body
        for _ in range(3):  # still refused, still not ready: nothing is accepted into it
            assert (await post(session, router.base, "later"))[0] == 503
            assert (await readyz(session, router.base))[0] == 503
    # Logged as an error once, not once per webhook or probe.
    events = [e for e in router.events("state_file_lost") if e["error"].startswith(losses)]
    assert len(events) == 1, events
    assert {e["level"] for e in events} == {"error"}


# ------------------------------------------------------------------ a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 4 MiB tmpfs (root only: skipped elsewhere), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write zeros to `path` until the filesystem has no room left."""
    with open(path, "wb", buffering=0) as f:
        for size in (65536, 512):
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError:
                pass


async def test_full_disk_is_not_ready_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    r = Router(tmp_path, small_disk / "state.db")
    r.start()
    try:
        await wait_http(f"{r.base}/readyz", r.proc, timeout_s=30)
        async with aiohttp.ClientSession() as session:
            assert (await post(session, r.base, "room"))[0] == 200
            fill(small_disk / "filler")
            # Big payloads, so that the inbox needs pages it does not have yet.
            refused = 0
            for n in range(40):
                body = firing_payload(20, f"full-{n}", description="x" * 2000)
                async with session.post(f"{r.base}/webhook", data=body, headers=HEADERS) as resp:
                    if resp.status == 503:
                        assert (await resp.json())["reason"] == "store"
                        refused += 1
                        break
            assert refused, "the inbox never ran out of room"
            status, body = await readyz(session, r.base)
            assert status == 503
            assert any("cannot accept webhooks" in x for x in body["reasons"]), body

            os.unlink(small_disk / "filler")

            async def ready_again() -> bool:
                return (await readyz(session, r.base))[0] == 200

            await until(ready_again)
            assert (await post(session, r.base, "room-again"))[0] == 200
    finally:
        r.stop()


# ------------------------------------------------------------------ the backlog metric


async def test_backlog_metric_counts_everything_waiting(router: Router, tmp_path: Path) -> None:
    """Planning held up (every plan's commit fails: here a trigger another connection adds
    refuses new alerts; planning retries every second): intake goes on accepting into the
    inbox, and the backlog gauge counts all of it."""
    holder = sqlite3.connect(tmp_path / "state" / "state.db", isolation_level=None, timeout=10)
    holder.execute(
        "CREATE TRIGGER hold BEFORE INSERT ON alerts BEGIN SELECT RAISE(ABORT, 'held'); END"
    )
    count = 1200
    try:
        async with aiohttp.ClientSession() as session:
            sem = asyncio.Semaphore(16)

            async def one(n: int) -> int:
                async with sem:
                    return (await post(session, router.base, f"wait-{n}"))[0]

            statuses = await asyncio.gather(*(one(n) for n in range(count)))
            assert statuses.count(200) == count

            async def backlog() -> float:
                async with session.get(f"{router.base}/metrics") as resp:
                    text = await resp.text()
                match = re.search(r"^alert_router_intake_backlog (\S+)$", text, re.M)
                assert match, "no alert_router_intake_backlog"
                return float(match.group(1))

            # Planning may have planned what it read before the lock was taken: nearly all
            # of them wait (the shipped rule fires above 1000).
            assert await backlog() > 1000
            holder.execute("DROP TRIGGER hold")

            async def drained() -> bool:
                return await backlog() == 0

            await until(drained, timeout_s=60)
    finally:
        holder.execute("DROP TRIGGER IF EXISTS hold")
        holder.close()
