"""router/alertmanager.py: the silence request Alertmanager's API v2 gets, and every failure
as AlertmanagerError. The Alertmanager is a small aiohttp app answering as the real one does
(prometheus/alertmanager `api/v2/openapi.yaml`); test_silence.py runs the real one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from router.alertmanager import Alertmanager
from router.errors import AlertmanagerError

from .helpers import free_port

STARTS = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
ENDS = STARTS + timedelta(hours=2)


class FakeAlertmanager:
    """POST <prefix>/api/v2/silences: records each request; `answer` says what to reply."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.answer: Callable[[], web.StreamResponse] = lambda: web.json_response(
            {"silenceID": f"s-{len(self.requests)}"}
        )
        self.delay = 0.0

    def app(self) -> web.Application:
        async def create(request: web.Request) -> web.StreamResponse:
            self.requests.append((request.path, await request.json()))
            await asyncio.sleep(self.delay)
            return self.answer()

        app = web.Application()
        app.router.add_post("/api/v2/silences", create)
        app.router.add_post("/am/api/v2/silences", create)
        return app


@pytest.fixture
async def am(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[tuple[FakeAlertmanager, str]]:
    fake = FakeAlertmanager()
    server = await aiohttp_server(fake.app())
    yield fake, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def client() -> AsyncIterator[Alertmanager]:
    am = Alertmanager(timedelta(seconds=1))
    yield am
    await am.aclose()


async def test_the_silence_request_is_a_postable_silence(
    am: tuple[FakeAlertmanager, str], client: Alertmanager
) -> None:
    fake, url = am
    silence = await client.create_silence(
        url + "/",
        {"severity": "critical", "alertname": "DiskFull", "instance": 'a"b'},
        STARTS,
        ENDS,
        "bob (telegram)",
        "ack k3v9x: looking",
    )
    assert silence == "s-1"
    assert fake.requests == [
        (
            "/api/v2/silences",
            {
                "matchers": [  # one equality matcher per label, sorted by name
                    {"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True},
                    {"name": "instance", "value": 'a"b', "isRegex": False, "isEqual": True},
                    {"name": "severity", "value": "critical", "isRegex": False, "isEqual": True},
                ],
                "startsAt": "2026-11-23T07:00:00+00:00",
                "endsAt": "2026-11-23T09:00:00+00:00",
                "createdBy": "bob (telegram)",
                "comment": "ack k3v9x: looking",
            },
        )
    ]


async def test_a_path_prefix_is_kept_and_the_session_reused(
    am: tuple[FakeAlertmanager, str], client: Alertmanager
) -> None:
    fake, url = am
    assert await client.create_silence(f"{url}/am", {"a": "1"}, STARTS, ENDS, "x", "") == "s-1"
    assert await client.create_silence(f"{url}/am/", {"a": "2"}, STARTS, ENDS, "x", "") == "s-2"
    assert [path for path, _ in fake.requests] == ["/am/api/v2/silences"] * 2


async def test_no_labels_is_refused_before_any_request(
    am: tuple[FakeAlertmanager, str], client: Alertmanager
) -> None:
    fake, url = am
    with pytest.raises(AlertmanagerError, match=r"^no labels to match on: a silence would match"):
        await client.create_silence(url, {}, STARTS, ENDS, "x", "")
    assert fake.requests == []


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            lambda: web.Response(status=400, text="bad matcher " + "x" * 400),
            r": 400 bad matcher x{288}$",  # the answer quoted, its first 300 characters
        ),
        (lambda: web.Response(status=500, text=""), r": 500 $"),
        (lambda: web.json_response({"id": "s"}), ": no silenceID in the answer$"),
        (lambda: web.json_response({"silenceID": ""}), ": no silenceID in the answer$"),
        (lambda: web.json_response(["s"]), ": no silenceID in the answer$"),
        (lambda: web.Response(text="ok"), ": ContentTypeError: "),  # not JSON
        (
            lambda: web.Response(text="{not json", content_type="application/json"),
            ": answer is not JSON: ",
        ),
    ],
)
async def test_a_refusal_or_an_odd_answer_is_an_alertmanager_error(
    am: tuple[FakeAlertmanager, str],
    client: Alertmanager,
    answer: Callable[[], web.StreamResponse],
    message: str,
) -> None:
    fake, url = am
    fake.answer = answer
    with pytest.raises(AlertmanagerError, match=f"^{url}/api/v2/silences{message}"):
        await client.create_silence(url, {"a": "1"}, STARTS, ENDS, "x", "")


async def test_a_silence_id_is_returned_as_text(
    am: tuple[FakeAlertmanager, str], client: Alertmanager
) -> None:
    fake, url = am
    fake.answer = lambda: web.json_response({"silenceID": 42})
    assert await client.create_silence(url, {"a": "1"}, STARTS, ENDS, "x", "") == "42"


async def test_a_slow_alertmanager_is_a_timeout(am: tuple[FakeAlertmanager, str]) -> None:
    fake, url = am
    fake.delay = 1
    client = Alertmanager(timedelta(seconds=0.2))
    try:
        with pytest.raises(AlertmanagerError, match=r"/api/v2/silences: TimeoutError"):
            await client.create_silence(url, {"a": "1"}, STARTS, ENDS, "x", "")
    finally:
        await client.aclose()


async def test_nothing_listening_is_an_alertmanager_error(client: Alertmanager) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(AlertmanagerError, match=f"^{url}/api/v2/silences: ClientConnectorError"):
        await client.create_silence(url, {"a": "1"}, STARTS, ENDS, "x", "")


async def test_aclose_without_a_request() -> None:
    await Alertmanager().aclose()
