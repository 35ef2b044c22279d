"""The one exception hierarchy of alert-router.

RouterError
├── ConfigError        routes.yaml cannot be used; carries every problem found
├── MatcherError       a matcher string is not valid Alertmanager syntax or RE2
├── PayloadError       a webhook body is not an Alertmanager v4 payload (HTTP 4xx)
├── StoreError         the state store cannot commit (HTTP 503, Alertmanager retries)
└── RenderError        a template failed on one incident (the delivery is dead-lettered)
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """A webhook request was refused; `status` is the HTTP status to answer."""

    def __init__(
        self, status: int, reason: str, message: str, problems: list[dict[str, str]] | None = None
    ) -> None:
        self.status = status
        self.reason = reason
        self.problems = problems or []
        super().__init__(message)


class StoreError(RouterError):
    """The state store could not commit; the caller answers 503 so the sender retries."""


class RenderError(RouterError):
    """A channel template raised while rendering one incident."""


class AlertmanagerError(RouterError):
    """Alertmanager's API answered with an error or could not be reached."""
