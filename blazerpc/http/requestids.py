"""Request ids over HTTP: every request gets one, every response and WebSocket says it.

The outermost middleware: it reads the caller's `x-request-id` (else makes one), keeps it in
the scope for the call's port (`scope_request_id`), and adds the header to the response, a
refusal (401, 404) or a WebSocket's handshake included.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blazerpc.security.requestids import REQUEST_ID, request_id

__all__ = ("RequestIds", "scope_request_id")

_KEY = "blazerpc.request_id"
_HEADER = REQUEST_ID.encode()
_STARTS = {"http.response.start", "websocket.accept", "websocket.http.response.start"}


class RequestIds:
    """Give each HTTP request and WebSocket an id, and return it in `x-request-id`."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == _HEADER:  # the first, as over gRPC
                given = value.decode("latin-1")
                break
        rid = scope[_KEY] = request_id(given)
        header = (_HEADER, rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] in _STARTS:
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self._app(scope, receive, send_with_id)


def scope_request_id(scope: Scope) -> str:
    """The id `RequestIds` gave this request (a new one if it did not run: a bare gateway)."""
    rid: str | None = scope.get(_KEY)
    return rid if rid is not None else request_id(None)
