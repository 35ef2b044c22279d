"""Alertmanager API v2 client: create a silence for an acknowledged incident.

The request and answer follow prometheus/alertmanager `api/v2/openapi.yaml`: POST
/api/v2/silences with a `postableSilence` (matchers, startsAt, endsAt, createdBy, comment),
answered 200 with `{"silenceID": "..."}`. Every failure raises AlertmanagerError.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import aiohttp

from router.errors import AlertmanagerError


class Alertmanager:
    """A client of one or more Alertmanagers' API v2; one HTTP session, opened on first use.

    `timeout` bounds each request as a whole (connect, send, answer). The base URL is given per
    call: each chat-ops receiver may name its own Alertmanager. Close it with `aclose`.
    """

    def __init__(self, timeout: timedelta = timedelta(seconds=5)) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout.total_seconds())
        self._session: aiohttp.ClientSession | None = None

    async def create_silence(
        self,
        base_url: str,
        labels: Mapping[str, str],
        starts: datetime,
        ends: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        """POST /api/v2/silences with one equality matcher per label; returns the silence id.

        `base_url` is Alertmanager's external URL (`http://am:9093`, a path prefix is kept);
        `starts` and `ends` are aware datetimes, sent as RFC 3339. Raises AlertmanagerError if
        `labels` is empty (the silence would match every alert), on a timeout or connection
        error, on any status but 200 (its first 300 characters quoted), or if the answer is
        not JSON or has no silenceID.
        """
        if not labels:
            raise AlertmanagerError("no labels to match on: a silence would match every alert")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in sorted(labels.items())
            ],
            "startsAt": starts.isoformat(),
            "endsAt": ends.isoformat(),
            "createdBy": created_by,
            "comment": comment,
        }
        url = f"{base_url.rstrip('/')}/api/v2/silences"
        try:
            async with self._session.post(url, json=body) as resp:
                if resp.status != 200:
                    raise AlertmanagerError(f"{url}: {resp.status} {(await resp.text())[:300]}")
                try:
                    data = await resp.json()
                except ValueError as exc:  # a 200 whose JSON does not parse
                    raise AlertmanagerError(f"{url}: answer is not JSON: {exc}") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AlertmanagerError(f"{url}: {type(exc).__name__}: {exc}") from None
        silence_id = data.get("silenceID") if isinstance(data, dict) else None
        if not silence_id:
            raise AlertmanagerError(f"{url}: no silenceID in the answer")
        return str(silence_id)

    async def aclose(self) -> None:
        """Close the HTTP session, if one was opened; the client may not be used after."""
        if self._session is not None:
            await self._session.close()
