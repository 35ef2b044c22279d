"""The one exception hierarchy of alert-router: every error it raises on purpose.

RouterError
├── ConfigError          routes.yaml cannot be used; carries every ConfigProblem found
├── MatcherError         a matcher is not Alertmanager syntax or RE2 (also a ValueError)
├── PayloadError         a webhook request is refused: HTTP status (4xx) and reason
│   └── BodyRefused      its body is not read: 408 too slow, 413 too large, 415, 400
├── StoreError           the state store cannot commit (HTTP 503, Alertmanager retries)
│   ├── StoreRefused     it refuses what a plan holds (the payload is set aside)
│   └── LeaseLost        this replica no longer holds the planner lease (a plan is fenced off)
├── RenderError          a template failed on one incident (the delivery is dead-lettered)
└── AlertmanagerError    Alertmanager's API v2 refused a request or could not be reached

Library errors are caught where they happen and raised again as one of these (`from None`
where the library's traceback tells nothing more), as encode/httpx `httpx/_exceptions.py` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


class RouterError(Exception):
    """Base of every error alert-router raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config file: where (file, line, key path) and what."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(RouterError):
    """routes.yaml is invalid; `problems` lists each problem with its place."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class MatcherError(RouterError, ValueError):
    """A matcher string is malformed or its regex does not compile under RE2."""


class PayloadError(RouterError):
    """A webhook request was refused; the answer is JSON (router/serving.py `refusal`).

    `status` is the HTTP status to answer (400, 408, 413, 415, 422), `reason` the short name
    used in the answer and as the `payloads_rejected_total` label ("invalid_json", "schema"...),
    `problems` a list of {"path", "error"} dicts, one per schema violation (at most 20).
    Alertmanager does not retry a 4xx: the group is not notified.
    """

    def __init__(
        self, status: int, reason: str, message: str, problems: list[dict[str, str]] | None = None
    ) -> None:
        self.status = status
        self.reason = reason
        self.problems = problems or []
        super().__init__(message)


class BodyRefused(PayloadError):
    """A request body that is not read (router/serving.py `read_body`).

    408 "timeout" (not all there in time), 413 "too_large" (counted decoded), 415
    "content_encoding" (not gzip, deflate or identity), 400 "content_encoding" (undecodable),
    503 "busy" (the bodies being read hold their bound; `retry_after` says when to retry).
    """

    def __init__(
        self, status: int, reason: str, message: str, retry_after: timedelta | None = None
    ) -> None:
        super().__init__(status, reason, message)
        self.retry_after = retry_after


class StoreError(RouterError):
    """The state store could not commit; the caller answers 503 so the sender retries."""


class StoreRefused(StoreError):
    """The store refuses the data of a plan, not for a passing reason: retrying the same plan
    fails again (PostgreSQL: a NUL character in a text column, a value too long to index)."""


class LeaseLost(StoreError):
    """A plan transaction was fenced off: this replica no longer holds the planner lease of
    the epoch it planned with (another replica took it, or it expired; router/roles.py).
    Nothing of the transaction is written; the replica stops planning and stands by."""


class RenderError(RouterError):
    """A channel template raised while rendering one incident."""


class AlertmanagerError(RouterError):
    """Alertmanager's API answered with an error or could not be reached."""
