"""Request auth as Alertmanager's http_config sends it: bearer token or basic auth, constant time."""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from router.config import AuthConfig


def authorized(auth: AuthConfig, header: str | None) -> bool:
    """True if no auth is configured, or the Authorization header carries a configured credential."""
    if auth.bearer_token is None and auth.basic_auth is None:
        return True
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    ok = False
    if auth.bearer_token is not None and scheme == "bearer":
        ok = hmac.compare_digest(value.encode(), auth.bearer_token.get_secret_value().encode())
    if auth.basic_auth is not None and scheme == "basic":
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = auth.basic_auth
        # Both compared, always, so timing does not tell which one was wrong.
        user_ok = hmac.compare_digest(user.encode(), expected.username.encode())
        pass_ok = hmac.compare_digest(
            password.encode(), expected.password.get_secret_value().encode()
        )
        ok = bool(sep) and user_ok and pass_ok
    return ok


def challenge(auth: AuthConfig) -> str:
    schemes = []
    if auth.bearer_token is not None:
        schemes.append('Bearer realm="alert-router"')
    if auth.basic_auth is not None:
        schemes.append('Basic realm="alert-router"')
    return ", ".join(schemes)


def require(request: web.Request, auth: AuthConfig) -> None:
    if not authorized(auth, request.headers.get("Authorization")):
        raise web.HTTPUnauthorized(
            text='{"status":"error","reason":"unauthorized","error":"missing or wrong credentials"}',
            content_type="application/json",
            headers={"WWW-Authenticate": challenge(auth)},
        )
