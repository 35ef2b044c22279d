"""The client address of a chat-ops request, also when the intake process passed it on."""

from __future__ import annotations

import socket

from aiohttp import web


def client_address(request: web.Request) -> str:
    """The address of the client that sent `request`: its TCP peer; or, for a request that came
    over the router's Unix socket (only the intake process, router/front.py, connects there and
    it sets X-Forwarded-For to its own client's address), that header. "" if unknown."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and sock.family == socket.AF_UNIX:
        return request.headers.get("X-Forwarded-For", "")
    return request.remote or ""
