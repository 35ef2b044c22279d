"""router/auth.py: which Authorization headers pass, the 401's challenge and body."""

from __future__ import annotations

import base64

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from router.auth import authorized, challenge, require, secret_matches
from router.config.model import AuthConfig

TOKEN = "s3cret-token"
BEARER = AuthConfig.model_validate({"bearer_token": TOKEN})
BASIC = AuthConfig.model_validate({"basic_auth": {"username": "am", "password": "pa:ss wörd"}})
BOTH = AuthConfig.model_validate(
    {"bearer_token": TOKEN, "basic_auth": {"username": "am", "password": "pa:ss wörd"}}
)
NONE = AuthConfig()


def basic(user_pass: bytes) -> str:
    return "Basic " + base64.b64encode(user_pass).decode()


@pytest.mark.parametrize(
    ("given", "expected", "matches"),
    [
        ("abc", "abc", True),
        ("abd", "abc", False),
        ("ab", "abc", False),  # a prefix is not the secret
        ("abcd", "abc", False),
        ("", "abc", False),
        ("wörd", "wörd", True),  # non-ASCII: compared as UTF-8 bytes, not refused
        ("w\udcc3\udcb6rd", "wörd", True),  # the same bytes as aiohttp hands them over
        ("w\udcffrd", "wörd", False),  # bytes that are not UTF-8: no error, no match
    ],
)
def test_secret_matches_compares_the_bytes(given: str, expected: str, matches: bool) -> None:
    assert secret_matches(given, expected) is matches


@pytest.mark.parametrize(
    ("auth", "header", "ok"),
    [
        (NONE, None, True),  # nothing configured: everyone passes
        (NONE, "Bearer anything", True),
        (BEARER, None, False),
        (BEARER, "", False),
        (BEARER, f"Bearer {TOKEN}", True),
        (BEARER, f"bearer {TOKEN}", True),  # the scheme is case-insensitive (RFC 9110 11.1)
        (BEARER, f"BEARER {TOKEN}  ", True),  # surrounding spaces of the value are dropped
        (BEARER, f"Bearer {TOKEN}x", False),
        (BEARER, f"Bearer {TOKEN[:-1]}", False),
        (BEARER, TOKEN, False),  # no scheme
        (BEARER, f"Token {TOKEN}", False),
        (BEARER, "Bearer", False),
        (BEARER, basic(f"am:{TOKEN}".encode()), False),  # basic is not configured
        (BASIC, basic("am:pa:ss wörd".encode()), True),  # split at the first colon only
        (BASIC, "basic " + base64.b64encode("am:pa:ss wörd".encode()).decode(), True),
        (BASIC, basic(b"am:pa:ss w\xf6rd"), False),  # Latin-1, not UTF-8: refused
        (BASIC, basic("AM:pa:ss wörd".encode()), False),  # the user-id is case-sensitive
        (BASIC, basic(b"am:"), False),
        (BASIC, basic(b"am"), False),  # no colon at all
        (BASIC, basic("pa:ss wörd".encode()), False),  # the password alone
        (BASIC, "Basic not*base64", False),
        (BASIC, "Basic YW06cGE", False),  # base64 without its padding
        (BASIC, "Basic " + "\udcff" * 4, False),  # raw bytes that are not ASCII
        (BASIC, f"Bearer {TOKEN}", False),  # bearer is not configured
        (BOTH, f"Bearer {TOKEN}", True),
        (BOTH, basic("am:pa:ss wörd".encode()), True),
        (BOTH, basic(f"am:{TOKEN}".encode()), False),
        (BOTH, "Digest username=am", False),
    ],
)
def test_authorized(auth: AuthConfig, header: str | None, ok: bool) -> None:
    assert authorized(auth, header) is ok


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (NONE, ""),
        (BEARER, 'Bearer realm="alert-router"'),
        (BASIC, 'Basic realm="alert-router"'),
        (BOTH, 'Bearer realm="alert-router", Basic realm="alert-router"'),
    ],
)
def test_challenge_names_each_configured_scheme(auth: AuthConfig, expected: str) -> None:
    assert challenge(auth) == expected


def test_require_refuses_with_a_json_401_and_the_challenge() -> None:
    request = make_mocked_request("POST", "/webhook", headers={"Authorization": "Bearer wrong"})
    with pytest.raises(web.HTTPUnauthorized) as refused:
        require(request, BOTH)
    assert refused.value.status == 401
    assert refused.value.content_type == "application/json"
    assert refused.value.headers["WWW-Authenticate"] == (
        'Bearer realm="alert-router", Basic realm="alert-router"'
    )
    assert refused.value.text == (
        '{"status":"error","reason":"unauthorized","error":"missing or wrong credentials"}'
    )


def test_require_passes_a_good_request_and_any_without_auth() -> None:
    good = make_mocked_request("POST", "/webhook", headers={"Authorization": f"Bearer {TOKEN}"})
    assert require(good, BEARER) is None
    assert require(make_mocked_request("GET", "/api/v1/alerts"), NONE) is None
    with pytest.raises(web.HTTPUnauthorized):
        require(make_mocked_request("GET", "/api/v1/alerts"), BEARER)
