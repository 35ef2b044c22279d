"""The intake process (server.intake_process, the default): a second process answers webhooks
and passes everything else to the router's; each one survives the other's failures as it should.

The process tree: router -> supervisor (forked at startup) -> intake process (router/supervisor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest

from router.supervisor import _private_folder

from ..harness import Fakes, firing_payload
from ..helpers import free_port, planned_outcome, slack_signed, wait_http
from .test_process import HEADERS, TOKEN, start, stop

pytestmark = pytest.mark.slow
SIGNING = "intake-process-signing-secret"


def write_config(path: Path, port: int, fakes: Fakes, token: str = TOKEN) -> None:
    path.write_text(f"""
server: {{listen: "127.0.0.1:{port}", auth: {{bearer_token: {token}}}}}
storage: {{path: "{path.parent / "state.db"}"}}
receivers:
  - name: main
    pagerduty_configs: [{{routing_key: R0UTINGKEY0000000000000000000000,
                         url: "{fakes.urls["pagerduty"]}/v2/enqueue"}}]
route: {{receiver: main}}
chatops:
  slack: {{signing_secret: {SIGNING}, team_id: T1, allowed_channels: [C1]}}
""")


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def supervisor(pid: int) -> int:
    """The router's only child process: the supervisor of its intake process."""
    (found,) = children(pid)
    return found


async def intake_child(pid: int, other_than: int = 0, timeout_s: float = 10.0) -> int:
    """The router's intake process, its supervisor's child (bounded wait for one other than
    `other_than`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in children(supervisor(pid)):
            if child != other_than:
                return child
        await asyncio.sleep(0.05)
    raise AssertionError(f"no intake process under {pid}")


async def assert_gone(**pids: int) -> None:
    """Each named process exits (bounded wait: 10 s)."""
    for _ in range(100):
        if not any(os.path.exists(f"/proc/{pid}") for pid in pids.values()):
            return
        await asyncio.sleep(0.1)
    alive = [name for name, pid in pids.items() if os.path.exists(f"/proc/{pid}")]
    raise AssertionError(f"still running: {', '.join(alive)}")


@contextlib.asynccontextmanager
async def running(
    fakes: Fakes, tmp_path: Path, port: int = 0
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, int]]:
    """A router (with its intake process) on `port` or a free one, answering; after, stopped
    cleanly unless the test has already ended it."""
    port = port or free_port()
    write_config(tmp_path / "routes.yaml", port, fakes)
    proc = start(tmp_path / "routes.yaml")
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield proc, f"http://127.0.0.1:{port}", port
    finally:
        if proc.poll() is None:
            assert stop(proc) == 0


async def test_webhooks_are_answered_by_a_second_process_and_the_rest_is_passed_on(
    fakes: Fakes, tmp_path: Path
) -> None:
    async with running(fakes, tmp_path) as (proc, base, _):
        child = await intake_child(proc.pid)
        middle = supervisor(proc.pid)
        async with aiohttp.ClientSession() as session:
            cids = []
            for n in range(20):
                async with session.post(
                    f"{base}/webhook", data=firing_payload(2, f"ip{n}"), headers=HEADERS
                ) as resp:
                    assert resp.status == 200
                    cids.append((await resp.json())["correlation_id"])
            for cid in cids:  # planned by the router's process, read through the intake's
                outcome = await planned_outcome(session, base, cid, HEADERS)
                assert (outcome["state"], outcome["queued"]) == ("planned", 1)
            for _ in range(100):  # bounded: 10 s
                if len(fakes.pagerduty.events) == 20:
                    break
                await asyncio.sleep(0.1)
            assert len(fakes.pagerduty.events) == 20

            # /metrics: the router's families, then the intake process's, each family once.
            async with session.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
            types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
            assert len(types) == len(set(types)), "a metric family is exposed twice"
            assert "alert_router_payloads_received_total 20.0" in text
            assert 'alert_router_alerts_received_total{status="firing"} 40.0' in text
            assert (
                'alert_router_notifications_queued_total{channel="pagerduty",receiver="main"} 20.0'
                in text
            )

            # A signed Slack request passes through unchanged (the signature covers the body);
            # a forged one is refused by the router behind it.
            form = urlencode(
                {"command": "/ack", "text": "help", "channel_id": "C1", "user_id": "U1"}
            ).encode()
            async with session.post(
                f"{base}/slack/commands", data=form, headers=slack_signed(form, SIGNING)
            ) as resp:
                assert resp.status == 200, await resp.text()
            forged = {**slack_signed(form, SIGNING), "X-Slack-Signature": "v0=" + "0" * 64}
            async with session.post(f"{base}/slack/commands", data=form, headers=forged) as resp:
                assert resp.status == 401
            async with session.get(f"{base}/api/v1/incidents") as resp:
                assert resp.status == 401 and "WWW-Authenticate" in resp.headers
            async with session.get(f"{base}/readyz") as resp:
                assert resp.status == 200
        assert children(middle) == [child]
    await assert_gone(intake_process=child, supervisor=middle)


async def test_header_bytes_that_are_not_utf8_are_passed_on_as_unequal(
    fakes: Fakes, tmp_path: Path
) -> None:
    # aiohttp's client dropped such bytes when the intake process passed a request on: the
    # token followed by one 0xff byte was let in to the read API, /-/reload and chat-ops.
    async with running(fakes, tmp_path) as (_, _, port):
        for tail in (b"\xff", b"\xe9", b"\xc3"):
            request = (
                b"GET /api/v1/alerts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Authorization: Bearer " + TOKEN.encode() + tail + b"\r\n\r\n"
            )
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request)
                assert (await reader.readline()).startswith(b"HTTP/1.1 401 "), tail
            finally:
                writer.close()


async def test_a_killed_intake_process_is_replaced_and_a_webhook_sent_meanwhile_is_kept(
    fakes: Fakes, tmp_path: Path
) -> None:
    async with running(fakes, tmp_path) as (proc, base, _):
        child = await intake_child(proc.pid)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base}/webhook", data=firing_payload(1, "before"), headers=HEADERS
            ) as resp,
        ):
            assert resp.status == 200
            first = (await resp.json())["correlation_id"]
        os.kill(child, signal.SIGKILL)
        # The listening socket stays open in the router's process: the connection waits in
        # its queue until the new intake process takes it (restarted after 1 s).
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            async with session.post(
                f"{base}/webhook", data=firing_payload(1, "meanwhile"), headers=HEADERS
            ) as resp:
                assert resp.status == 200
                cid = (await resp.json())["correlation_id"]
            assert (await planned_outcome(session, base, cid, HEADERS))["queued"] == 1
        # Forked from the same image, the new process draws its own correlation ids.
        assert cid != first
        assert await intake_child(proc.pid, other_than=child) != child
        log = (tmp_path / "router.log").read_text()
        assert "intake_process_exited" in log and "code=-9" in log


async def test_the_intake_process_goes_when_the_router_is_killed(
    fakes: Fakes, tmp_path: Path
) -> None:
    async with running(fakes, tmp_path) as (proc, _, port):
        child = await intake_child(proc.pid)
        middle = supervisor(proc.pid)
        proc.kill()
        proc.wait(timeout=10)
        await assert_gone(intake_process=child, supervisor=middle)
    async with running(fakes, tmp_path, port):  # and the port is free for the next router
        pass


async def test_a_reload_reaches_the_intake_process(fakes: Fakes, tmp_path: Path) -> None:
    new_token = "rotated-bearer-token-456"
    new_headers = {**HEADERS, "Authorization": f"Bearer {new_token}"}
    async with running(fakes, tmp_path) as (_, base, port):
        write_config(tmp_path / "routes.yaml", port, fakes, token=new_token)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/-/reload", headers=HEADERS) as resp:
                assert resp.status == 200, await resp.text()
            statuses: tuple[int, int] = (0, 0)
            for n in range(100):  # bounded: 10 s for the intake process to load it too
                async with (
                    session.post(
                        f"{base}/webhook", data=firing_payload(1, f"rot{n}"), headers=new_headers
                    ) as new,
                    session.post(
                        f"{base}/webhook", data=firing_payload(1, f"old{n}"), headers=HEADERS
                    ) as old,
                ):
                    statuses = (new.status, old.status)
                if statuses == (200, 401):
                    break
                await asyncio.sleep(0.1)
            assert statuses == (200, 401)


async def test_a_killed_supervisor_stops_the_router_with_an_error(
    fakes: Fakes, tmp_path: Path
) -> None:
    """Nothing could restart the intake process any more: the router stops (exit 1) and says
    why, so that its service manager starts it whole again; the intake process goes too."""
    async with running(fakes, tmp_path) as (proc, _, _):
        child = await intake_child(proc.pid)
        os.kill(supervisor(proc.pid), signal.SIGKILL)
        assert proc.wait(timeout=20) == 1
        await assert_gone(intake_process=child)
    log = (tmp_path / "router.log").read_text()
    assert "intake_supervisor_exited" in log and "code=-9" in log


@pytest.mark.parametrize("target", ["router", "supervisor", "intake process"])
async def test_sighup_to_any_of_the_three_processes_reloads_the_whole_router(
    fakes: Fakes, tmp_path: Path, target: str
) -> None:
    """`kill -HUP` may reach any of them (pkill, a service manager's reload, a person using
    ps): the router's process reloads and the intake process after it, never one alone."""
    new_headers = {**HEADERS, "Authorization": "Bearer rotated-bearer-token-789"}
    async with running(fakes, tmp_path) as (proc, base, port):
        pids = {
            "router": proc.pid,
            "supervisor": supervisor(proc.pid),
            "intake process": await intake_child(proc.pid),
        }
        write_config(tmp_path / "routes.yaml", port, fakes, token="rotated-bearer-token-789")
        os.kill(pids[target], signal.SIGHUP)
        statuses: dict[str, int] = {}
        async with aiohttp.ClientSession() as session:
            for n in range(100):  # bounded: 10 s for both processes to load the file
                for name, method, path, headers in [
                    ("webhook (intake process), new token", "POST", "/webhook", new_headers),
                    ("webhook (intake process), old token", "POST", "/webhook", HEADERS),
                    ("API (router), new token", "GET", "/api/v1/incidents", new_headers),
                    ("API (router), old token", "GET", "/api/v1/incidents", HEADERS),
                ]:
                    body = firing_payload(1, f"hup{n}") if method == "POST" else None
                    async with session.request(
                        method, f"{base}{path}", data=body, headers=headers
                    ) as resp:
                        statuses[name] = resp.status
                if sorted(statuses.values()) == [200, 200, 401, 401] and all(
                    code == (200 if "new" in name else 401) for name, code in statuses.items()
                ):
                    break
                await asyncio.sleep(0.1)
        assert statuses == {
            "webhook (intake process), new token": 200,
            "webhook (intake process), old token": 401,
            "API (router), new token": 200,
            "API (router), old token": 401,
        }
        assert set(children(pids["supervisor"])) == {pids["intake process"]}, "none restarted"
        assert proc.poll() is None


def socket_folder(pid: int) -> Path:
    """The private folder of the Unix socket the router's process `pid` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[6] in inodes and fields[7].endswith("/router.sock"):
            return Path(fields[7]).parent
    raise AssertionError(f"process {pid} listens on no router.sock")


@pytest.mark.parametrize("end", ["SIGTERM", "router killed", "supervisor killed"])
async def test_the_socket_folder_is_removed_however_the_router_ends(
    fakes: Fakes, tmp_path: Path, end: str
) -> None:
    async with running(fakes, tmp_path) as (proc, _, _):
        folder = socket_folder(proc.pid)
        assert folder.name.startswith("alert-router-") and (folder / "router.sock").exists()
        middle, child = supervisor(proc.pid), await intake_child(proc.pid)
        if end == "SIGTERM":
            assert stop(proc) == 0
        elif end == "router killed":  # the supervisor, the last one out, removes it
            proc.kill()
            proc.wait(timeout=10)
        else:
            os.kill(middle, signal.SIGKILL)
            assert proc.wait(timeout=20) == 1
        await assert_gone(intake_process=child, supervisor=middle)
        assert not folder.exists()


@pytest.mark.parametrize("depth", [10, 90])
def test_the_private_socket_folder_fits_a_unix_socket_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: int
) -> None:
    """In TMPDIR when `<folder>/router.sock` fits in 107 bytes; else in /tmp (a deep TMPDIR
    made the router exit at start: 'AF_UNIX path too long')."""
    tmpdir = tmp_path / ("d" * depth)
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    folder = _private_folder()
    try:
        assert len(os.fsencode(os.path.join(folder, "router.sock"))) <= 107
        expected = tmpdir if len(os.fsencode(tmpdir)) + 33 <= 107 else Path("/tmp")
        assert Path(folder).parent == expected
        assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
    finally:
        os.rmdir(folder)
    assert not any(tmpdir.iterdir())
