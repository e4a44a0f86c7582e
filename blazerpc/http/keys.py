"""API keys over HTTP: every route needs one, but the probes; answered in the route's shape.

ASGI middleware in front of every route (the gateway's, the Open Inference routes, and any
mounted later). A CORS preflight never reaches it: the CORS middleware outside it answers
first, and the 401 it sends carries CORS headers, so a page can read it. A browser cannot
set headers on a WebSocket, so there the key may also come as the subprotocols
`["bearer", "<key>"]`; the server then accepts with the subprotocol `bearer`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blazerpc.errors import UnauthenticatedError, to_status
from blazerpc.http.answer import HTTP_STATUS, route_error_body
from blazerpc.http.requestids import scope_request_id
from blazerpc.security.keys import INVALID_KEY, ApiKeys

__all__ = ("RequireKeys",)

_BEARER = "bearer"


class RequireKeys:
    """Refuse every request without a valid key, but those to `open_paths` (route templates)."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, open_paths: Sequence[str]) -> None:
        self._app = app
        self._keys = keys
        self._open: list[re.Pattern[str]] = [compile_path(path)[0] for path in open_paths]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        path: str = scope.get("path", "")
        if kind not in ("http", "websocket") or any(p.match(path) for p in self._open):
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if kind == "http" and _is_preflight(scope, headers):
            await self._app(scope, receive, send)  # never 401: the browser sends no key here
            return
        if kind == "websocket" and _BEARER in (scope.get("subprotocols") or []):
            if self._has_subprotocol_key(scope):
                await self._app(scope, receive, _choosing_bearer(send))
                return
            error: UnauthenticatedError | None = UnauthenticatedError(INVALID_KEY)
        else:
            error = None
        try:
            if error is not None:
                raise error
            self._keys.check(headers.getlist("authorization"))
        except UnauthenticatedError as refusal:
            where = f"{path!r} [request id {scope_request_id(scope)}]"  # repr: no forged lines
            status, message = to_status(refusal, "", service=where)
            body = route_error_body(path, status, message)
            if kind == "websocket":
                await _deny_websocket(scope, send, HTTP_STATUS[status], body)
            else:
                await _deny(send, HTTP_STATUS[status], body)
            return
        await self._app(scope, receive, send)

    def _has_subprotocol_key(self, scope: Scope) -> bool:
        offered: list[str] = list(scope.get("subprotocols") or [])
        return any(self._keys.accepts(key) for key in offered if key != _BEARER)


def _is_preflight(scope: Scope, headers: Headers) -> bool:
    """A CORS preflight: OPTIONS with an Origin and the method the page wants to use."""
    return (
        scope["method"] == "OPTIONS"
        and "origin" in headers
        and "access-control-request-method" in headers
    )


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]


async def _deny(send: Send, code: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": code, "headers": _headers(body)})
    await send({"type": "http.response.body", "body": body})


async def _deny_websocket(scope: Scope, send: Send, code: int, body: bytes) -> None:
    """A 401 answer to the handshake where the server can send one, else close it (1008)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        start = {"type": "websocket.http.response.start", "status": code}
        await send({**start, "headers": _headers(body)})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1008, "reason": "unauthenticated"})


def _choosing_bearer(send: Send) -> Send:
    """`send` that accepts the WebSocket with the subprotocol `bearer`, which the client offered."""

    async def choosing(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": _BEARER}
        await send(message)

    return choosing
