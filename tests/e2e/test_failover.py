"""The planner's failover between `serve` replicas on one PostgreSQL database, under load.

SIGKILL the planner replica 20 times at random moments, cut the planner off from the database
(a proxy that holds its traffic, then lets it through late), and pause it (SIGSTOP) past its
lease: each time another replica takes over within 5 s, every payload accepted (answered 200)
is planned exactly once (one notification each), and there is no split brain: the lease epoch
recorded on every notification never goes down in the order they were written (a planner that
lost the lease commits nothing after the one that took it over).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from ..harness import firing_payload
from ..replicas import Replica, Replicas, RoundRobin, replica_config

pytestmark = pytest.mark.slow

RECEIVERS = (
    "  - name: main\n    pagerduty_configs: [{routing_key: R0UTINGKEY0000000000000000000000}]"
)
KILLS = 20
TAKEOVER = timedelta(seconds=5)  # the bound: another replica plans within this
WAIT = timedelta(seconds=60)  # bound of every other wait


async def role(session: aiohttp.ClientSession, replica: Replica) -> str | None:
    """The role /readyz says (a replica cut off from the database answers 503 and says it
    too, after its 2 s write check); None if it does not answer within 5 s."""
    if not replica.running:
        return None
    try:
        async with session.get(
            f"{replica.url}/readyz", timeout=aiohttp.ClientTimeout(total=5)
        ) as resp:
            said: str = (await resp.json())["role"]
            return said
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
        return None


async def the_planner(
    sets: list[Replicas], session: aiohttp.ClientSession, bound: timedelta = WAIT
) -> Replica:
    """The one replica (of all `sets`) that says it is the planner, once exactly one does."""
    replicas = [r for s in sets for r in s.replicas]

    async def single() -> Replica | None:
        roles = [await role(session, r) for r in replicas]
        return replicas[roles.index("planner")] if roles.count("planner") == 1 else None

    found: Replica = await sets[0].wait_for(single, "a single planner", bound)
    return found


@contextlib.asynccontextmanager
async def load(
    sets: list[Replicas], session: aiohttp.ClientSession, workers: int = 3
) -> AsyncIterator[set[str]]:
    """Posts a new group at a time (one notification each) to the replicas of `sets` in turn
    from `workers` tasks while the block runs; yields the groups of the payloads answered 200.

    A replica killed or cut off may have committed a payload it never answered for; the
    balancer then posts the same payload to the next replica (as Alertmanager retries): the
    group is in the inbox twice and is notified once, so groups are counted, not payloads."""
    accepted: set[str] = set()
    stop = asyncio.Event()
    posts = iter(range(10**9))
    balancers = [RoundRobin(s, session, timeout=timedelta(seconds=15)) for s in sets]

    async def work() -> None:
        while not stop.is_set():
            n = next(posts)
            try:
                await balancers[n % len(balancers)].post(firing_payload(1, f"{n:08d}"))
                accepted.add(f"{n:08d}")
            except AssertionError:  # no replica of that set answered 200: retried later
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(work()) for _ in range(workers)]
    try:
        yield accepted
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT.total_seconds())


async def takeover_time(
    survivors: list[Replica], session: aiohttp.ClientSession, since: float
) -> float:
    """Seconds from `since` (time.monotonic()) until one of `survivors` says it is the planner
    (bounded wait)."""
    while time.monotonic() - since < WAIT.total_seconds():
        for replica in survivors:
            if await role(session, replica) == "planner":
                return time.monotonic() - since
        await asyncio.sleep(0.02)
    raise AssertionError(f"no replica took over within {WAIT}")


async def planned_once_in_epoch_order(url: str, accepted: set[str]) -> list[int]:
    """Wait (bounded) until the inbox is planned; then every group accepted has exactly one
    notification, none has two, nothing was set aside, and the epochs of the notifications in
    the order they were written never go down. The epochs seen, in order."""
    db = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + WAIT.total_seconds()
        while await db.fetchval("SELECT count(*) FROM inbox"):
            assert time.monotonic() < deadline, "the inbox was not planned"
            await asyncio.sleep(0.1)
        counts = dict(
            await db.fetch(
                "SELECT i.group_key, count(*) FROM outbox o JOIN incidents i"
                " ON i.id=o.incident_id GROUP BY i.group_key"
            )
        )
        keys = {f'{{}}:{{group="{group}"}}' for group in accepted}
        assert keys - set(counts) == set(), "accepted and not planned"
        assert {key: n for key, n in counts.items() if n != 1} == {}, "notified twice"
        assert await db.fetchval("SELECT count(*) FROM set_aside") == 0
        epochs = [r[0] for r in await db.fetch("SELECT epoch FROM outbox ORDER BY id")]
        assert epochs == sorted(epochs), "a lower epoch committed after a higher one"
        return sorted(set(epochs))
    finally:
        await db.close()


async def test_sigkill_of_the_planner_20_times_under_load(
    tmp_path: Path, postgres_url: str
) -> None:
    rng = random.Random(17)
    takeovers: list[float] = []
    async with (
        Replicas(tmp_path, replica_config(postgres_url, RECEIVERS), 2, dry_run=True) as replicas,
        aiohttp.ClientSession() as session,
    ):
        async with load([replicas], session) as accepted:
            for _ in range(KILLS):
                planner = await the_planner([replicas], session)
                await asyncio.sleep(rng.uniform(0.05, 1.0))  # a random moment of the load
                index = replicas.replicas.index(planner)
                await replicas.kill(index)
                killed = time.monotonic()
                # Started again at once, to be a standby for the next kill: the new process
                # comes up while the lease runs out and races the survivor for it; either one
                # taking it is a takeover (the killed process is gone: it answers nothing).
                restarted = asyncio.create_task(replicas.start(index))
                try:
                    takeovers.append(await takeover_time(replicas.replicas, session, killed))
                finally:
                    await restarted
        assert max(takeovers) < TAKEOVER.total_seconds(), takeovers
        assert len(accepted) > KILLS * 10
        epochs = await planned_once_in_epoch_order(postgres_url, accepted)
        assert epochs[-1] >= KILLS + 1  # a new epoch at every takeover


async def test_a_planner_paused_past_its_lease_commits_nothing_when_it_resumes(
    tmp_path: Path, postgres_url: str
) -> None:
    """SIGSTOP the planner under load (as a long GC pause or a frozen VM would) until another
    replica took over, then SIGCONT: it resumes mid-plan, unaware; its connections and the
    lease row are fine, only the epoch moved on: its commits are fenced off."""
    async with (
        Replicas(tmp_path, replica_config(postgres_url, RECEIVERS), 2, dry_run=True) as replicas,
        aiohttp.ClientSession() as session,
    ):
        assert await the_planner([replicas], session) is replicas[0]
        async with load([replicas], session) as accepted:
            await asyncio.sleep(0.5)  # planning under load
            replicas.pause(0)
            try:
                paused = time.monotonic()
                assert (
                    await takeover_time([replicas[1]], session, paused) < TAKEOVER.total_seconds()
                )
                await asyncio.sleep(1.0)  # the other plans alone for a while
            finally:
                replicas.resume(0)
        assert await the_planner([replicas], session) is replicas[1]
        epochs = await planned_once_in_epoch_order(postgres_url, accepted)
        assert epochs[0] == 1 and epochs[-1] >= 2


class HoldingProxy:
    """A TCP proxy to PostgreSQL that can hold the traffic (both ways, and new connections)
    as a network partition does, then let what it held through late."""

    def __init__(self, upstream_port: int) -> None:
        """A proxy to 127.0.0.1:`upstream_port`, not listening yet."""
        self.upstream_port = upstream_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on a free loopback port (`port`)."""
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self.flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                await self.flowing.wait()  # held: nothing passes until let through
                sink.write(data)
                await sink.drain()
        sink.close()

    async def aclose(self) -> None:
        """Stop listening and end every connection."""
        self.flowing.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_a_planner_cut_off_from_the_database_stops_and_another_takes_over(
    tmp_path: Path, postgres_url: str
) -> None:
    port = int(postgres_url.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = HoldingProxy(port)
    await proxy.start()
    through_proxy = postgres_url.replace(f":{port}/", f":{proxy.port}/")
    (tmp_path / "cut").mkdir()
    (tmp_path / "direct").mkdir()
    try:
        async with (
            Replicas(
                tmp_path / "cut", replica_config(through_proxy, RECEIVERS), 1, dry_run=True
            ) as cut,
            Replicas(
                tmp_path / "direct", replica_config(postgres_url, RECEIVERS), 1, dry_run=True
            ) as direct,
            aiohttp.ClientSession() as session,
        ):
            assert await the_planner([cut, direct], session) is cut[0]
            async with load([cut, direct], session) as accepted:
                await asyncio.sleep(0.5)  # planning under load
                proxy.flowing.clear()  # the partition
                held = time.monotonic()
                assert await takeover_time([direct[0]], session, held) < TAKEOVER.total_seconds()

                # The cut replica notices on its own clock that it cannot renew the lease.
                async def standby() -> bool:
                    return await role(session, cut[0]) == "standby"

                await cut.wait_for(standby, "the cut replica stands by", WAIT)
                await asyncio.sleep(1.0)  # the other plans alone for a while
                proxy.flowing.set()  # what the cut replica sent arrives now, late
            assert await the_planner([cut, direct], session) is direct[0]
            assert cut[0].events("lease_lost") or cut[0].events("plan_fenced_off")
            epochs = await planned_once_in_epoch_order(postgres_url, accepted)
            assert epochs[0] == 1 and epochs[-1] >= 2
    finally:
        await proxy.aclose()
