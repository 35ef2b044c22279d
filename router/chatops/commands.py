"""Chat commands, the same on every platform: /ack, /unack, /alerts, /help, and who may use them.

The platform modules (telegram.py, slack.py) turn their updates into a `Command` and an `Actor`,
call `Commands.run`, and show the reply text. Nothing here knows about Telegram or Slack.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from router.alertmanager import Alertmanager
from router.config import parse_duration
from router.errors import AlertmanagerError, StoreError
from router.logs import event
from router.metrics import Metrics
from router.planner import Planner
from router.render import clock, human_duration
from router.state import IncidentState
from router.store import ID_ALPHABET, ID_LENGTH, CommandQueue, QueuedCommand

log = logging.getLogger("router.chatops")

NAMES = ("ack", "unack", "alerts", "help")
MAX_SILENCE = timedelta(days=30)
MAX_ECHO = 40  # characters of a user's word repeated in an answer
MAX_NAME = 64  # characters of a user's name shown in messages
# A replica that does not plan commits an /ack or /unack for the planner and waits this long for
# its answer (Slack wants one within 3 seconds); after that it answers that the command is queued.
ANSWER_WAIT = timedelta(seconds=2)
ANSWER_POLL = timedelta(milliseconds=50)  # between two looks for that answer
COMMAND_BATCH = 32  # queued commands applied per look
# The planner looks for queued commands when a replica's NOTIFY wakes it, and at least this often.
COMMAND_POLL = timedelta(seconds=1)
_ID_RE = re.compile(rf"^#?([{ID_ALPHABET}]{{{ID_LENGTH}}})$", re.IGNORECASE)

HELP = """alert-router commands:
/ack <id> [duration] [comment]: acknowledge incident <id>: reminders and escalation stop, every
  message shows it, PagerDuty is acknowledged; with a duration (30m, 2h, 1d) also silence its
  alerts in Alertmanager for that long
/ack (as a reply to an alert message): the same, for that message's incident
/unack <id>: take the acknowledgement back
/alerts: open incidents and who acknowledged them
/help: this text"""


@dataclass(frozen=True)
class Actor:
    """Who asked, and where: immutable ids as the platform gives them, and a name to show."""

    platform: str  # "telegram" | "slack"
    user_id: str  # Telegram user id (digits) / Slack member id (U…, W…)
    name: str  # shown in messages, "@alice" / "Alice": made by `display_name`, never authorizes
    place: str  # Telegram chat id / Slack channel id
    team: str = ""  # Slack workspace id (T…); "" on Telegram
    address: str = ""  # the client address of the HTTP request that carried it, for logs


@dataclass(frozen=True)
class Allow:
    """Places (chat or channel ids) and users (ids; empty: anyone in those places)."""

    places: frozenset[str]
    users: frozenset[str] = frozenset()

    def admits(self, actor: Actor) -> bool:
        """True if the allow-lists let `actor` ack here (empty lists admit everyone)."""
        return actor.place in self.places and (not self.users or actor.user_id in self.users)


@dataclass(frozen=True)
class Policy:
    """Who may use the commands on one platform, by immutable ids only: the global allow-list,
    and per receiver the allow-list for acking its incidents (default: the global one)."""

    platform: str
    team: str | None  # the Slack workspace requests must come from; None on Telegram
    default: Allow
    receivers: Mapping[str, Allow] = field(default_factory=dict)

    def refusal(self, actor: Actor) -> str | None:
        """None if the actor may use the commands at all (some allow-list admits them here);
        else the answer that says why not, with the id an admin would add."""
        if self.team is not None and actor.team != self.team:
            return f"Sorry, commands are not accepted from this Slack workspace ({actor.team})."
        scopes = [self.default, *self.receivers.values()]
        if not any(actor.place in s.places for s in scopes):
            where = "chat" if actor.platform == "telegram" else "channel"
            return f"Sorry, commands are not accepted from this {where} ({actor.place})."
        if not any(s.admits(actor) for s in scopes):
            return f"Sorry, {actor.name} (user id {actor.user_id}) is not allowed to acknowledge alerts here."
        return None

    def change_refusal(self, actor: Actor, incident: IncidentState) -> str | None:
        """None if the actor may ack or unack this incident: the allow-list of its receiver (or
        of the receiver it escalated to) admits them; else the answer that says why not."""
        names = [incident.receiver, *([incident.escalated_to] if incident.escalated_to else [])]
        if any(self.receivers.get(n, self.default).admits(actor) for n in names):
            return None
        return (
            f"Sorry, {actor.name} (user id {actor.user_id}) may not acknowledge incidents of"
            f" receiver {incident.receiver!r} from here."
        )


@dataclass(frozen=True)
class Command:
    """A parsed chat command: its name, the incident id it names (if any), and the rest."""

    name: str
    incident_id: str | None = None
    duration: timedelta | None = None
    comment: str = ""


def parse(name: str, text: str) -> Command | str:
    """`ack`, "k3v9x 2h disk filling" -> Command; or the reason it cannot be understood."""
    name = name.lstrip("/").split("@", 1)[0].lower()
    if name not in NAMES:
        return f"Unknown command /{bounded(name, MAX_ECHO)}. Try /help."
    words = text.split()
    if name in ("ack", "unack") and words and words[0].lower() in ("help", "-h", "--help"):
        return Command("help")
    incident_id = None
    if words and (m := _ID_RE.match(words[0])):
        incident_id = m.group(1).lower()
        words = words[1:]
    elif words and name in ("ack", "unack"):
        return f"{bounded(words[0], MAX_ECHO)!r} is not an incident id (5 letters and digits, as in the alert message)."
    duration = None
    if words and name == "ack":
        try:
            duration = parse_duration(words[0])
            words = words[1:]
        except ValueError:
            duration = None
        if duration is not None and not timedelta(minutes=1) <= duration <= MAX_SILENCE:
            return f"A silence lasts from 1m to {human_duration(MAX_SILENCE)}."
    return Command(name, incident_id, duration, " ".join(words)[:500])


def bounded(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, "…" marking a cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def display_name(text: str) -> str:
    """A chat user's name as shown in messages: one line (control characters become spaces)
    and at most MAX_NAME characters. Escaping is for each place it lands in."""
    flat = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    return bounded(" ".join(flat.split()), MAX_NAME) or "(no name)"


class Commands:
    """The chat-ops rules, platform-free: authorize, ack and unack (through the planner's
    compare-and-set), list open incidents; each answer is the text to show.

    With a `queue` (PostgreSQL, several replicas), a replica that does not plan (`planning()`
    False) commits an ack or unack to the queue and answers with what the planner made of it;
    the planner's replica applies the queued commands (`apply_queued`) as it applies its own.
    """

    def __init__(
        self,
        planner: Planner,
        clock_: Callable[[], datetime],
        alertmanager: Alertmanager,
        alertmanager_url: str | None,
        default_silence: timedelta | None = None,
        metrics: Metrics | None = None,
        *,
        queue: CommandQueue | None = None,
        planning: Callable[[], bool] = lambda: True,
    ) -> None:
        """`queue`: where commands wait for the planner (None: this process always plans);
        `planning()`: whether this replica plans now."""
        self.metrics = metrics or Metrics()
        self.queue = queue
        self.planning = planning
        self.planner = planner
        self.clock = clock_
        self.alertmanager = alertmanager
        self.alertmanager_url = alertmanager_url
        self.default_silence = default_silence
        # incident id -> "acknowledged by @alice": an ack or unack under way (event loop only)
        self._busy: dict[str, str] = {}

    def authorize(self, actor: Actor, policy: Policy) -> str | None:
        """None if the actor may use the commands here; else the refusal to show, logged."""
        refusal = policy.refusal(actor)
        return None if refusal is None else self._refused(actor, refusal)

    def _refused(self, actor: Actor, refusal: str, **fields: object) -> str:
        """The refusal, logged with the ids an admin would add to an allow-list."""
        event(
            log,
            logging.WARNING,
            "chatops_refused",
            platform=actor.platform,
            team=actor.team or None,
            user=actor.user_id,
            name=actor.name,
            place=actor.place,
            peer=actor.address or None,
            **fields,
        )
        return refusal

    async def run(self, command: Command, actor: Actor, policy: Policy) -> str:
        """The answer to a command of an actor `authorize` let in; an ack or unack also needs
        the allow-list of the incident's receiver (`policy`) to admit them."""
        try:
            if command.name == "help":
                return HELP
            if command.name == "alerts":
                return await self._alerts()
            if command.incident_id is None:
                return f"/{command.name} needs an incident id (or, in Telegram, a reply to the alert message).\n\n{HELP}"
            return await self._change_ack(command, actor, policy)
        except StoreError as exc:
            event(log, logging.ERROR, "chatops_store_error", error=str(exc))
            return "Sorry, the router could not record that just now (its store is busy or failing). Try again."

    async def press_ack(self, value: str, actor: Actor, policy: Policy) -> str:
        """The Ack button, whose value is the incident id: checked as a typed `/ack <id>` is."""
        command = parse("ack", value)
        return command if isinstance(command, str) else await self.run(command, actor, policy)

    async def _change_ack(self, command: Command, actor: Actor, policy: Policy) -> str:
        """Ack or unack, one at a time per incident: a silence is created before the ack is
        stored, so a second engineer must not create one too while the first one's is made."""
        incident_id = command.incident_id or ""
        # Authorized before the incident is marked busy: a refused attempt holds no one up.
        incident = await self._open_incident(incident_id)
        if isinstance(incident, str):
            return incident
        refusal = policy.change_refusal(actor, incident)
        if refusal is not None:
            return self._refused(actor, refusal, incident=incident_id)
        if self.queue is not None and not self.planning():
            return await self._submit(self.queue, command, actor, incident_id)
        return await self._apply(command, actor, incident_id)

    async def _submit(
        self, queue: CommandQueue, command: Command, actor: Actor, incident_id: str
    ) -> str:
        """Commit the command for the planner and answer with its answer, or, if the planner
        has not answered within ANSWER_WAIT, that the command is queued."""
        command_id = await queue.submit_command(
            command.name,
            incident_id,
            asdict(actor),
            command.duration,
            command.comment,
            self.clock(),
        )
        event(
            log,
            logging.INFO,
            "chatops_command_queued",
            command=command.name,
            command_id=command_id,
            incident=incident_id,
            by=actor.name,
            via=actor.platform,
        )
        loop = asyncio.get_running_loop()
        until = loop.time() + ANSWER_WAIT.total_seconds()
        while True:
            answer = await queue.command_result(command_id)
            if answer is not None:
                return answer
            if loop.time() >= until:
                break
            await asyncio.sleep(ANSWER_POLL.total_seconds())
        return (
            f"⏳ /{command.name} #{incident_id} by {actor.name} is recorded: the planner applies"
            " it in a moment (or tells who acknowledged first). /alerts shows the result."
        )

    async def apply_queued(self) -> int:
        """Apply the commands other replicas queued, oldest first (on the planner's replica),
        each answer written once; how many were applied. Raises StoreError."""
        if self.queue is None:
            return 0
        pending = await self.queue.pending_commands(COMMAND_BATCH)
        for queued in pending:
            answer = await self._apply_one(queued)
            await self.queue.finish_command(queued.id, answer, self.clock())
        return len(pending)

    async def _apply_one(self, queued: QueuedCommand) -> str:
        """One queued command's answer (a won ack or unack is answered in its plan's commit)."""
        command = Command(queued.name, queued.incident_id, queued.duration, queued.comment)
        try:
            actor = Actor(**queued.actor)
            return await self._apply(command, actor, queued.incident_id, queued)
        except StoreError:
            raise
        except Exception as exc:  # a bug, or a row this version cannot read: answer, go on
            event(
                log, logging.ERROR, "chatops_command_failed", command_id=queued.id, error=repr(exc)
            )
            return f"Sorry, /{queued.name} #{queued.incident_id} failed: {exc}"

    async def apply_queued_forever(self) -> None:
        """While this replica plans, apply what the others queue: when one wakes it, and every
        COMMAND_POLL."""
        if self.queue is None:
            return
        while True:
            try:
                applied = await self.apply_queued() if self.planning() else 0
            except Exception as exc:  # the store failed, or a bug: the commands wait; retry
                event(log, logging.ERROR, "chatops_commands_failed", error=repr(exc))
                applied = 0
            if applied == 0:
                await self.queue.wait_commands(COMMAND_POLL)

    async def _apply(
        self,
        command: Command,
        actor: Actor,
        incident_id: str,
        queued: QueuedCommand | None = None,
    ) -> str:
        """Ack or unack on this replica's planner (`queued`: the command another replica queued)."""
        busy = self._busy.get(incident_id)
        if busy is not None:
            # Whoever is busy now came after any ack already stored: that one is named first.
            incident = await self._open_incident(incident_id)
            if command.name == "ack" and isinstance(incident, IncidentState) and incident.acked_by:
                return _already_acked(incident)
            return f"#{incident_id} is being {busy} just now: nothing changed."
        verb = "acknowledged by" if command.name == "ack" else "unacknowledged by"
        self._busy[incident_id] = f"{verb} {actor.name}"
        try:
            incident = await self._open_incident(incident_id)  # as it is now, under the mark
            if isinstance(incident, str):
                return incident
            if command.name == "ack":
                return await self._ack(command, actor, incident, queued)
            return await self._unack(actor, incident, queued)
        finally:
            del self._busy[incident_id]

    async def _open_incident(self, incident_id: str) -> IncidentState | str:
        """The open incident, or the answer that says why there is none."""
        incident = await self.planner.incident(incident_id)
        if incident is None:
            return f"No incident #{incident_id}. /alerts lists the open ones."
        if incident.status == "resolved":
            return f"#{incident_id} is already resolved: nothing to change."
        return incident

    def _answered(
        self, queued: QueuedCommand | None, answer: str
    ) -> tuple[CommandQueue, int, str] | None:
        """What the planner writes with the plan of a queued command that wins: its answer."""
        if queued is None or self.queue is None:
            return None
        return (self.queue, queued.id, answer)

    async def _ack(
        self,
        command: Command,
        actor: Actor,
        incident: IncidentState,
        queued: QueuedCommand | None,
    ) -> str:
        incident_id = incident.id
        if incident.acked_by:
            return _already_acked(incident)
        now = self.clock()
        silence_note, silence_id = "", ""
        duration = command.duration or self.default_silence
        if duration is not None:
            url = self.alertmanager_url or incident.external_url
            labels = incident.common_labels or incident.group_labels
            try:
                if queued is not None and queued.silence_id:  # made by a planner that died
                    silence_id = queued.silence_id
                elif not url:
                    raise AlertmanagerError("no Alertmanager URL (set chatops.alertmanager_url)")
                else:
                    silence_id = await self.alertmanager.create_silence(
                        url,
                        labels,
                        now,
                        now + duration,
                        actor.name,
                        f"alert-router incident #{incident_id} acknowledged via {actor.platform}"
                        + (f": {command.comment}" if command.comment else ""),
                    )
                    if queued is not None and self.queue is not None:
                        await self.queue.note_silence(queued.id, silence_id)
                silence_note = f" Silenced in Alertmanager for {human_duration(duration)} (silence {silence_id})."
            except AlertmanagerError as exc:
                event(log, logging.ERROR, "silence_failed", incident=incident_id, error=str(exc))
                silence_note = f" The silence could not be created: {exc}"
        won = f"✅ #{incident_id} acknowledged by {actor.name}. Reminders and escalation stop.{silence_note}"
        result = await self.planner.set_ack(
            incident_id,
            None,
            actor.name,
            now,
            uuid.uuid4().hex[:16],
            self._answered(queued, won),
            via=f"{actor.platform}:{actor.place}",
            comment=command.comment,
            silence_id=silence_id,
        )
        if result is None:  # resolved between the look and the ack
            return f"#{incident_id} was resolved meanwhile: nothing to acknowledge."
        if isinstance(result, IncidentState):  # acked first by someone else
            return _already_acked(result)
        self.metrics.acks.labels(actor.platform).inc()
        self.metrics.observe_plan(result)
        event(
            log,
            logging.INFO,
            "incident_acked",
            incident=incident_id,
            by=actor.name,
            user=actor.user_id,
            via=actor.platform,
            place=actor.place,
            silence=silence_id,
            updates=len(result.outbox),
        )
        return won

    async def _unack(
        self, actor: Actor, incident: IncidentState, queued: QueuedCommand | None
    ) -> str:
        incident_id = incident.id
        if not incident.acked_by:
            return f"#{incident_id} is not acknowledged."
        note = (
            " (its silence stays in Alertmanager until it expires)" if incident.silence_id else ""
        )
        won = f"↩️ #{incident_id} is no longer acknowledged (by {actor.name}){note}."
        result = await self.planner.set_ack(
            incident_id,
            incident.acked_by,
            None,
            self.clock(),
            uuid.uuid4().hex[:16],
            self._answered(queued, won),
        )
        if result is None:
            return f"#{incident_id} was resolved meanwhile."
        if isinstance(result, IncidentState):
            return (
                _already_acked(result)
                if result.acked_by
                else f"#{incident_id} is not acknowledged."
            )
        self.metrics.observe_plan(result)
        event(
            log,
            logging.INFO,
            "incident_unacked",
            incident=incident_id,
            by=actor.name,
            user=actor.user_id,
            via=actor.platform,
        )
        return won

    async def _alerts(self) -> str:
        """The open incidents: the planner's, or on a replica that does not plan (whose
        planner holds no state), as the store has them."""
        if self.queue is not None and not self.planning():
            stored, _ = await self.planner.store.load_state()
            found = list(stored.incidents.values())
        else:
            found = self.planner.open_incidents()
        incidents = sorted(found, key=lambda i: i.opened_at)
        shown = [i for i in incidents if i.notified]
        if not shown:
            return "No open incidents. 🎉"
        lines = [f"{len(shown)} open incident(s):"]
        for i in shown[:30]:
            name = i.common_labels.get("alertname") or i.group_labels.get("alertname") or "alerts"
            name, sev = bounded(name, MAX_ECHO), bounded(i.common_labels.get("severity", ""), 20)
            state = f"acked by {i.acked_by}" if i.acked_by else "NOT acked"
            lines.append(
                f"#{i.id} {name}{f' ({sev})' if sev else ''} ×{len(i.alerts)} · {i.receiver} · {state}"
            )
        if len(shown) > 30:
            lines.append(f"… and {len(shown) - 30} more")
        return "\n".join(lines)


def _already_acked(incident: IncidentState) -> str:
    return f"#{incident.id} was already acknowledged by {incident.acked_by} at {clock(incident.acked_at)}."
