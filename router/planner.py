"""The planner: inbox payloads -> plans in arrival order; each plan commits with the watermark."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from router.errors import LeaseLost, StoreError, StoreRefused
from router.logs import event
from router.metrics import Metrics
from router.models import WebhookPayload
from router.outcomes import Outcomes
from router.pipeline import Pipeline
from router.roles import LEASE_RENEW, Role
from router.state import IncidentState, Plan, State
from router.store import CommandQueue, InboxRow, Store

log = logging.getLogger("router.planner")

PLAN_BATCH = 64  # inbox rows read at a time
PLAN_SLICE = timedelta(milliseconds=4)  # pipeline work between two turns of the event loop
PLAN_RETRY = timedelta(seconds=1)  # after a failed commit, plan again this much later
# Parsed payloads kept for the planner, counted by the bytes of their bodies; past it, a row is
# parsed again from its stored body when planned, so that a backlog costs no memory to speak of.
PARSED_BYTES = 8 * 1024 * 1024


class Planner:
    """Owns the working state (firing alerts, open incidents) and every change to it.

    Payloads from the inbox, sweeps (inhibition released, escalation) and acks each run the
    pipeline on the state and commit the plan; one lock serializes them, so that a change is
    decided on the state the previous one committed. A commit that fails leaves the state
    half-changed: it is loaded again from the store, as the next start would load it.

    Planning runs on the event loop in slices of PLAN_SLICE, the webhook's commits and answers
    in between; a slice's plans commit in one transaction with the watermark (the id of the
    last payload planned). The payload intake parsed is handed over in memory (`accept`), up to
    PARSED_BYTES of bodies waiting; past that, and after a restart, rows past the watermark are
    parsed from their stored body.

    With several replicas on one database, `follow(role)` plans only while this replica is
    the planner (router/roles.py): it loads the state at each takeover and drops it when the
    lease is lost; a standby only accepts payloads (and follows the watermark, for `backlog`).
    """

    def __init__(
        self,
        store: Store,
        pipeline_factory: Callable[[Callable[[], str]], Pipeline],
        *,
        wake_outbox: asyncio.Event,
        outcomes: Outcomes,
        metrics: Metrics,
        parsed_bytes: int = PARSED_BYTES,
    ) -> None:
        """`pipeline_factory(new_incident_id)` builds the pipeline of the current config;
        `wake_outbox` is set when a commit queued notifications; parsed payloads wait in
        memory for up to `parsed_bytes` of bodies."""
        self.store = store
        self.state = State()
        self.watermark = 0
        self._factory = pipeline_factory
        self._pipeline = pipeline_factory(store.new_incident_id)
        self._wake_outbox = wake_outbox
        self._outcomes = outcomes
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._grew = asyncio.Event()
        # inbox id -> (the payload intake parsed, its body's bytes), up to PARSED_BYTES in all
        self._parsed: dict[int, tuple[WebhookPayload, int]] = {}
        self._parsed_bytes = 0
        self._parsed_limit = parsed_bytes
        self._task: asyncio.Task[None] | None = None
        self._role: Role | None = None  # set by follow(); None: always the planner
        self._epoch = 0  # the lease epoch the state was loaded for (follow()); 0: not planning

    @property
    def backlog(self) -> int:
        """Payloads accepted and not planned yet."""
        return max(0, self.store.last_inbox_id - self.watermark)

    @property
    def planning(self) -> bool:
        """Whether this replica plans now: it holds the planner role AND the state of that
        lease epoch is loaded. A replica that has just taken the lease is not planning until
        follow() has loaded the state (an ack answered in between would find no incident).
        Without follow() (no roles: tests, or before serving), whether start() ran."""
        if self._role is None:
            return self._task is not None
        return self._epoch != 0 and self._epoch == self._role.epoch

    @property
    def parsed_bytes(self) -> int:
        """Bytes of the bodies whose parsed payloads wait in memory to be planned."""
        return self._parsed_bytes

    async def start(self, *, background: bool = True) -> None:
        """Load the state and the watermark; with `background`, plan what waits past it and
        what comes next in a task of its own (else the caller calls plan_waiting()).

        Raises StoreError if the store cannot be read."""
        self.state, self.watermark = await self.store.load_state()
        self._pipeline.attach(self.state)
        if background:
            self._task = asyncio.create_task(self._run(), name="planner")
            self._grew.set()

    async def aclose(self) -> None:
        """Stop planning after the slice in progress; what waits is planned at the next start."""
        if self._task is not None:
            async with self._lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def follow(self, role: Role) -> None:
        """Plan while `role` is the planner, with the state loaded at each takeover (and
        again if the epoch changed); stand by while it is not: stop planning at once, forget
        the state, follow the watermark every LEASE_RENEW. Runs until cancelled.

        A plan fenced off (LeaseLost) makes the role a standby (role.lose())."""
        self._role = role
        self.store.watch_inbox(self._grew.set)
        if self._task is not None and role.is_planner:  # start() ran for this epoch
            self._epoch = role.epoch
        while True:
            if role.epoch != self._epoch and self._epoch:
                await self._stand_by()
            if role.is_planner and not self._epoch:
                epoch = role.epoch
                try:
                    await self.start()
                except StoreError as exc:  # the lease is held but the state cannot be read
                    self._plan_failed(None, str(exc))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(role.changed(), PLAN_RETRY.total_seconds())
                    continue
                self._epoch = epoch
                event(
                    log,
                    logging.WARNING,
                    "planning_started",
                    epoch=epoch,
                    watermark=self.watermark,
                    firing_alerts=len(self.state.alerts),
                    open_incidents=len(self.state.incidents),
                )
            if self._epoch:
                if role.epoch == self._epoch:
                    await role.changed()
                continue
            with contextlib.suppress(StoreError):
                self.watermark = await self.store.watermark()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(role.changed(), LEASE_RENEW.total_seconds())

    async def _stand_by(self) -> None:
        """Stop planning now (the slice in progress is cancelled: the lease is gone, its
        commit would be fenced off) and forget the state."""
        task, self._task, self._epoch = self._task, None, 0
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._lock:
            self.state = State()
            self._parsed.clear()
            self._parsed_bytes = 0
            self._pipeline = self._factory(self.store.new_incident_id)
            self._pipeline.attach(self.state)
        event(log, logging.WARNING, "planning_stopped", watermark=self.watermark)

    def _lease_lost(self, exc: LeaseLost) -> None:
        """A commit was fenced off: this replica is a standby from now (follow() stops)."""
        event(log, logging.ERROR, "plan_fenced_off", error=str(exc))
        if self._role is not None:
            self._role.lose()

    async def use_pipeline(self, pipeline: Pipeline) -> None:
        """Plan with a pipeline built from a new config (reload), from the next change on."""
        async with self._lock:
            pipeline.attach(self.state)
            self._pipeline = pipeline
            self._factory = lambda new_id: Pipeline(pipeline.config, new_id)

    async def accept(
        self, body: bytes, received_at: datetime, correlation_id: str, payload: WebhookPayload
    ) -> None:
        """Commit a payload to the inbox (durable once this returns), then plan it: with
        `payload`, as parsed by intake. Raises StoreError if it could not be committed."""
        row_id = await self.store.accept(body, received_at, correlation_id)
        planning = self._role is None or self._role.is_planner
        if (
            row_id > self.watermark
            and planning
            and self._parsed_bytes + len(body) <= self._parsed_limit
        ):
            self._parsed[row_id] = (payload, len(body))
            self._parsed_bytes += len(body)
        self._grew.set()

    def _payload(self, row: InboxRow) -> WebhookPayload:
        """The row's payload: as intake parsed it if kept, else parsed from its body."""
        kept = self._forget(row)
        return row.payload() if kept is None else kept

    def _forget(self, row: InboxRow) -> WebhookPayload | None:
        """Drop the row's parsed payload if kept; the payload, or None."""
        kept = self._parsed.pop(row.id, None)
        if kept is None:
            return None
        self._parsed_bytes -= kept[1]
        return kept[0]

    # ------------------------------------------------------------ the inbox

    async def _run(self) -> None:
        while True:
            await self._grew.wait()
            self._grew.clear()
            try:
                await self.plan_waiting()
            except LeaseLost as exc:  # another replica plans now
                self._lease_lost(exc)
                return
            except Exception as exc:  # the store failed, or a bug: the payloads wait; retry
                self._plan_failed(None, str(exc) if isinstance(exc, StoreError) else repr(exc))
                await asyncio.sleep(PLAN_RETRY.total_seconds())
                self._grew.set()

    async def plan_waiting(self) -> list[tuple[str, Plan]]:
        """Plan every payload past the watermark, in arrival order, one slice at a time (the
        event loop serves in between); (correlation id, plan) of each, as committed.

        Raises StoreError if the store failed: the payloads not committed stay in the inbox
        and the state is loaded again."""
        done: list[tuple[str, Plan]] = []
        while True:
            rows = await self.store.inbox_after(self.watermark, PLAN_BATCH)
            if not rows:
                return done
            async with self._lock:
                try:
                    done += await self._plan_slice(rows)
                except Exception:  # StoreError, or a bug: the state may hold half a change
                    with contextlib.suppress(StoreError):
                        await self._reload()
                    raise
            await asyncio.sleep(0)  # answer webhooks between slices

    async def _plan_slice(self, rows: list[InboxRow]) -> list[tuple[str, Plan]]:
        """Plan `rows` for at most PLAN_SLICE and commit the plans with the watermark (one
        transaction); a payload that cannot be planned, or whose plan the store cannot write
        (an error other than StoreError, or StoreRefused), is set aside and ends the slice."""
        planned: list[tuple[InboxRow, Plan]] = []
        failed: tuple[InboxRow, str] | None = None
        until = time.monotonic() + PLAN_SLICE.total_seconds()
        for row in rows:
            try:
                payload = self._payload(row)
                plan = self._pipeline.ingest(
                    payload, self.state, row.received_at, row.correlation_id
                )
            except Exception as exc:  # a bug, or a body an earlier version accepted
                failed = (row, str(exc))
                break
            planned.append((row, plan))
            if time.monotonic() > until:
                break
        if planned:
            try:
                await self.store.commit_plans(
                    [(plan, row.received_at) for row, plan in planned], planned[-1][0].id
                )
            except Exception as exc:  # a plan the store cannot write (a time past 9999, a NUL)
                if isinstance(exc, StoreError) and not isinstance(exc, StoreRefused):
                    raise  # the store failed: the slice waits in the inbox
                if len(planned) == 1:
                    await self._set_aside(planned[0][0], f"cannot be stored: {exc}")
                    return []
                await self._reload()  # and find which payload's: one per transaction
                done: list[tuple[str, Plan]] = []
                for row, _ in planned:
                    done += await self._plan_slice([row])
                return done
            self.watermark = planned[-1][0].id
        for row, plan in planned:
            # accept() may have kept the payload while the commit ran, after this slice had
            # read the row and parsed its body: nothing would plan (and drop) it again.
            self._forget(row)
            self._planned(row.correlation_id, plan)
        if failed is not None:
            await self._set_aside(*failed)
        return [(row.correlation_id, plan) for row, plan in planned]

    async def _set_aside(self, row: InboxRow, error: str) -> None:
        """Keep a payload that cannot be planned aside, past the watermark, on the state as
        committed (the live one holds half of its change)."""
        await self._reload()
        await self.store.set_aside(row, error)
        self.watermark = row.id
        self._forget(row)  # kept by accept() after the slice read it (see _plan_slice)
        self._plan_failed(row, error)

    def _planned(self, correlation_id: str, plan: Plan) -> None:
        """A payload's plan is committed: count, log, wake delivery."""
        if plan.outbox:
            self._wake_outbox.set()
        self._metrics.observe_plan(plan)
        outcome = self._outcomes.planned(correlation_id, plan)
        event(log, logging.INFO, "webhook_planned", **outcome)

    def _plan_failed(self, row: InboxRow | None, error: str) -> None:
        """Planning failed: the store (retried), or one payload (set aside in the store)."""
        self._metrics.plan_failures.inc()
        correlation_id = row.correlation_id if row is not None else ""
        if correlation_id:
            self._outcomes.failed(correlation_id, error)
        event(
            log,
            logging.ERROR,
            "webhook_plan_failed",
            correlation_id=correlation_id or None,
            error=error,
            kept="in the store's set_aside table" if correlation_id else "in the inbox; retrying",
        )

    async def _reload(self) -> None:
        """Take the state again from the store (after a change that did not commit)."""
        self.state, self.watermark = await self.store.load_state()
        self._pipeline = self._factory(self.store.new_incident_id)
        self._pipeline.attach(self.state)

    # ------------------------------------------------------------ time and people

    async def sweep(self, now: datetime, correlation_id: str) -> Plan:
        """Judge inhibition again and escalate what is due; the plan, committed.

        Raises StoreError if the commit failed (the state is then loaded again)."""
        async with self._lock:
            plan = self._pipeline.sweep(self.state, now, correlation_id)
            await self._commit(plan, now)
        return plan

    async def set_ack(
        self,
        incident_id: str,
        expect: str | None,
        acked_by: str | None,
        now: datetime,
        correlation_id: str,
        command: tuple[CommandQueue, int, str] | None = None,
        **details: str,
    ) -> Plan | IncidentState | None:
        """Compare-and-set the ack of an open incident: if its `acked_by` is still `expect`, set
        it to `acked_by` (None: take the ack back) and queue the updates of every message.
        With `command` (queue, command id, its answer if this call wins), a queued chat command
        is applied: the plan and the answer commit in one transaction, once per command.

        Returns the Plan committed if this call won; a copy of the incident as it is if its ack
        was no longer `expect` (someone else acked or unacked first: nothing is written or
        queued), or if the command had an answer already; None if the incident is not open.
        Of two concurrent acks exactly one wins. Raises StoreError if the commit failed.
        """
        async with self._lock:
            current = self.state.open_incident(incident_id)
            if current is None:
                return None
            if current.acked_by != expect:
                return copy.deepcopy(current)
            plan = self._pipeline.set_ack(
                self.state, current, acked_by, now, correlation_id, **details
            )
            if not await self._commit(plan, now, command):
                await self._reload()
                current = self.state.open_incident(incident_id)
                return None if current is None else copy.deepcopy(current)
        return plan

    async def _commit(
        self, plan: Plan, now: datetime, command: tuple[CommandQueue, int, str] | None = None
    ) -> bool:
        """Commit one plan (no watermark move), with a command's answer if given, and wake
        delivery; False if that command had an answer already (nothing was written: the
        state holds a change to take back). On failure, reload the state and raise. The
        caller counts the plan (metrics)."""
        try:
            if command is None:
                await self.store.commit_plans([(plan, now)], None)
            else:
                queue, command_id, answer = command
                if not await queue.finish_command(command_id, answer, now, plan):
                    return False
        except LeaseLost as exc:
            self._lease_lost(exc)
            raise
        except StoreError:
            with contextlib.suppress(StoreError):
                await self._reload()
            raise
        if plan.outbox:
            self._wake_outbox.set()
        return True

    async def incident(self, incident_id: str) -> IncidentState | None:
        """The incident with this id: a copy of the live one if open, else as stored; None if
        unknown. Raises StoreError if the store cannot be read."""
        live = self.state.open_incident(incident_id)
        if live is not None:
            return copy.deepcopy(live)
        return await self.store.incident(incident_id)

    def open_incidents(self) -> list[IncidentState]:
        """Copies of the open incidents."""
        return [copy.deepcopy(i) for i in self.state.incidents.values()]
