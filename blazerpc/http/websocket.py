"""One WebSocket call as a CallPort (`GET /models/{name}/ws`): a JSON message each way.

An empty message ends the caller's stream. A failure sends `{"error": {code, message}}` and
closes with code 4000 + the gRPC status number.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from grpclib.const import Status
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from blazerpc.context import Context
from blazerpc.errors import cancelled_status
from blazerpc.http.answer import error_body
from blazerpc.http.requestids import scope_request_id
from blazerpc.runtime.boundary import Limits
from blazerpc.wire.json import JsonCodec

__all__ = ("WebSocketPort", "close_websocket")

_WS_CLOSE_BASE = 4000
"""A WebSocket call that fails closes with code 4000 + its gRPC status number."""


class WebSocketPort:
    """One WebSocket call as a CallPort: a JSON message per request and per result."""

    transport = "ws"

    def __init__(self, websocket: WebSocket, codec: JsonCodec, limits: Limits) -> None:
        self._websocket = websocket
        self._codec = codec
        self._limits = limits
        self._is_input_ended = False
        self.is_disconnected = False
        self.request_id = scope_request_id(websocket.scope)

    @property
    def peer(self) -> str | None:
        client = self._websocket.client
        return f"{client.host}:{client.port}" if client else None

    @property
    def deadline(self) -> float | None:
        return None

    def context(self) -> Context:
        return Context(dict(self._websocket.headers), peer=self.peer, request_id=self.request_id)

    def cancelled_status(self) -> Status:
        return cancelled_status(is_past_deadline=False)  # a WebSocket call has no deadline

    async def receive(self) -> dict[str, Any] | None:
        if self._is_input_ended:
            return None
        try:
            message = await self._websocket.receive()
        except WebSocketDisconnect:
            message = {"type": "websocket.disconnect"}
        if message["type"] == "websocket.disconnect":
            self.is_disconnected = True
            raise asyncio.CancelledError
        data = message.get("text") or message.get("bytes") or b""
        if len(data) > self._limits.max_request_bytes:
            raise self._limits.request_too_large(len(data))
        if not data:
            self._is_input_ended = True
            return None
        return self._codec.decode(data)

    async def send(self, result: object) -> None:
        data = self._codec.encode(result)
        self._limits.check_response(len(data), self._codec.model.name)
        try:
            await self._websocket.send_text(data.decode())
        except (WebSocketDisconnect, RuntimeError):
            self.is_disconnected = True
            raise asyncio.CancelledError from None


async def close_websocket(websocket: WebSocket, status: Status, message: str) -> None:
    """Tell the caller why, then close with code 4000 + the status number."""
    if websocket.application_state is WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_text(b'{"error":%s}'.decode() % error_body(status, message).decode())
        await websocket.close(_WS_CLOSE_BASE + status.value, status.name)
