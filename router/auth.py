"""Request auth as Alertmanager's http_config sends it: bearer token or basic auth, constant time.

Alertmanager's webhook sends `Authorization: Bearer <token>` (RFC 6750 2.1) or `Basic
base64(user:password)` (RFC 7617 2), per prometheus/common `config/http_config.go`. The scheme
name is case-insensitive (RFC 9110 11.1). Secrets are compared with hmac.compare_digest, so the
time taken does not tell how much of a guess was right.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from router.config import AuthConfig


def _raw(value: str) -> bytes:
    """A header's bytes as they came: aiohttp decodes header bytes that are not UTF-8 as lone
    surrogates (surrogateescape), which a plain .encode() refuses."""
    return value.encode("utf-8", "surrogateescape")


def secret_matches(given: str, expected: str) -> bool:
    """A secret from a request header equals `expected`, compared in constant time; any bytes."""
    return hmac.compare_digest(_raw(given), expected.encode())


def authorized(auth: AuthConfig, header: str | None) -> bool:
    """True if no auth is configured, or the Authorization header carries a configured credential.

    `header` is the raw Authorization value, or None if absent. Basic credentials are decoded as
    UTF-8 and split at the first colon (a user-id has none, RFC 7617 2); a value that is not
    base64 or not UTF-8 is refused. Raises nothing.
    """
    if auth.bearer_token is None and auth.basic_auth is None:
        return True
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    ok = False
    if auth.bearer_token is not None and scheme == "bearer":
        ok = secret_matches(value, auth.bearer_token.get_secret_value())
    if auth.basic_auth is not None and scheme == "basic":
        try:
            decoded = base64.b64decode(_raw(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        expected = auth.basic_auth
        # Both compared, always, so timing does not tell which one was wrong.
        user_ok = secret_matches(user, expected.username)
        pass_ok = secret_matches(password, expected.password.get_secret_value())
        ok = bool(sep) and user_ok and pass_ok
    return ok


def challenge(auth: AuthConfig) -> str:
    """The WWW-Authenticate value of a 401: a challenge per configured scheme (RFC 9110 11.6.1).

    E.g. `Bearer realm="alert-router", Basic realm="alert-router"` (RFC 6750 3, RFC 7617 2).
    """
    schemes = []
    if auth.bearer_token is not None:
        schemes.append('Bearer realm="alert-router"')
    if auth.basic_auth is not None:
        schemes.append('Basic realm="alert-router"')
    return ", ".join(schemes)


def require(request: web.Request, auth: AuthConfig) -> None:
    """Return if `request` is authorized by `auth`, see `authorized`.

    Raises web.HTTPUnauthorized (401) with a JSON body (reason "unauthorized") and the
    WWW-Authenticate challenge of each configured scheme.
    """
    if not authorized(auth, request.headers.get("Authorization")):
        raise web.HTTPUnauthorized(
            text='{"status":"error","reason":"unauthorized","error":"missing or wrong credentials"}',
            content_type="application/json",
            headers={"WWW-Authenticate": challenge(auth)},
        )
