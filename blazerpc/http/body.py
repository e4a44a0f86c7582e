"""Reading one HTTP request's body from ASGI, within the server's size limit.

`RequestBody` gathers the chunks as they arrive; `OneDocument` reads it whole as one request
message, `NdjsonLines` as newline-delimited JSON, one message per line as soon as its line
is in (a client stream). A disconnect while reading cancels the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from blazerpc.errors import StalledError, WireError
from blazerpc.runtime.boundary import Limits

__all__ = ("Decode", "NdjsonLines", "OneDocument", "Receive", "RequestBody", "Requests")

Receive = Callable[[], Any]
Decode = Callable[[bytes], dict[str, Any]]


class RequestBody:
    """The request's bytes as ASGI delivers them; over the size limit is refused unread."""

    def __init__(self, receive: Receive, limits: Limits, declared_length: str) -> None:
        self._receive = receive
        self._limits = limits
        self._declared_length = declared_length
        self.buffer = bytearray()
        """What arrived and was not taken yet."""
        self.is_complete = False
        """The last chunk has arrived: from now on, ASGI only tells that the caller left."""
        self.is_disconnected = False
        self.has_stalled = False
        """A started message stopped arriving for message_timeout: the call answers 408."""
        self.is_too_large = False
        """The body went past max_request_bytes: the call answers 413 (not 429: retrying
        the same body cannot help)."""

    async def read_all(self) -> bytes:
        """The whole body, once it has all arrived."""
        declared = self._declared_length
        if declared.isdigit() and int(declared) > self._limits.max_request_bytes:
            self.is_too_large = True
            raise self._limits.request_too_large(int(declared))
        while not self.is_complete:
            await self.read_chunk(is_started=True)
            self.check_size()
        return bytes(self.buffer)

    async def read_chunk(self, *, is_started: bool) -> None:
        """Wait for the next chunk; a disconnect cancels the call. In a started message (a
        document, a line begun), `message_timeout` seconds without a chunk fail the call."""
        stall_s = self._limits.message_timeout
        if is_started and stall_s:
            try:
                async with asyncio.timeout(stall_s):
                    message = await self._receive()
            except TimeoutError:
                self.has_stalled = True
                raise StalledError(
                    f"the request body stopped arriving: nothing came for {stall_s:g} s "
                    "(message_timeout). Send the body without pauses."
                ) from None
        else:
            message = await self._receive()
        if message["type"] == "http.disconnect":
            self.is_disconnected = True
            raise asyncio.CancelledError
        self.buffer += message.get("body", b"")
        self.is_complete = not message.get("more_body", False)

    def check_size(self) -> None:
        """Refuse a body, or a pending line, over the limit."""
        if len(self.buffer) > self._limits.max_request_bytes:
            self.is_too_large = True
            raise self._limits.request_too_large(len(self.buffer))


class Requests(Protocol):
    """How a route turns the body into request messages."""

    @property
    def is_exhausted(self) -> bool:
        """Every request message has been taken: the body has nothing more to give."""
        ...

    async def next(self, decode: Decode) -> dict[str, Any] | None:
        """The next request message's fields, or None once there are no more."""
        ...


class OneDocument:
    """The whole body is one request message."""

    def __init__(self, body: RequestBody) -> None:
        self._body = body
        self._is_taken = False

    @property
    def is_exhausted(self) -> bool:
        return self._is_taken and self._body.is_complete

    async def next(self, decode: Decode) -> dict[str, Any] | None:
        if self._is_taken:
            return None
        self._is_taken = True
        return decode(await self._body.read_all())


class NdjsonLines:
    """Newline-delimited JSON: each non-empty line is one request message of a stream."""

    def __init__(self, body: RequestBody) -> None:
        self._body = body
        self._count = 0
        self.is_exhausted = False

    async def next(self, decode: Decode) -> dict[str, Any] | None:
        line = await self._next_line()
        if line is None:
            self.is_exhausted = True
            return None
        self._count += 1
        try:
            return decode(line)
        except WireError as err:
            raise WireError(f"request line {self._count}: {err}") from None

    async def _next_line(self) -> bytes | None:
        body = self._body
        buffer = body.buffer
        while True:
            newline = buffer.find(b"\n")
            if newline >= 0:
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                if line.strip():
                    return line
                continue
            body.check_size()
            if body.is_complete:
                line = bytes(buffer)
                buffer.clear()
                return line if line.strip() else None
            await body.read_chunk(is_started=bool(buffer))
