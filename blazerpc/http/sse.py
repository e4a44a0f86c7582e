"""One Server-Sent Events response, written straight to ASGI: every event goes out at once.

Headers leave with the first event (or the first keep-alive), so an error before then can
still be a real HTTP status. With gzip, each event is compressed and sync-flushed, so the
client decodes it as soon as it arrives; nothing waits in a buffer.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ("EventStream", "Send", "accepts_gzip")

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_KEEPALIVE = b": keep-alive\n\n"
_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx and friends: pass each event on, unbuffered
]


class EventStream:
    """Writes `data:` events, named events and keep-alive comments to one HTTP response."""

    __slots__ = ("_compressor", "_send", "is_ended", "is_started", "last_write")

    def __init__(self, send: Send, *, gzip: bool) -> None:
        self._send = send
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None
        self.is_started = False
        self.is_ended = False
        self.last_write = time.monotonic()
        """When the last bytes went out, for keep-alives."""

    async def data(self, payload: bytes) -> None:
        """One unnamed event: `data: <payload>` (payload holds no newline)."""
        await self._write(b"data: " + payload + b"\n\n")

    async def named(self, event: bytes, payload: bytes) -> None:
        """One named event, such as `event: error`."""
        await self._write(b"event: " + event + b"\ndata: " + payload + b"\n\n")

    async def keep_alive(self) -> None:
        """A comment line: proxies see traffic on an idle stream and keep it open."""
        await self._write(_KEEPALIVE)

    async def end(self) -> None:
        """Finish the response; safe to call twice."""
        if self.is_ended:
            return
        await self._start()
        self.is_ended = True
        tail = self._compressor.flush() if self._compressor is not None else b""
        await self._send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _write(self, chunk: bytes) -> None:
        if self.is_ended:
            return
        if not self.is_started:
            await self._start()
        if self._compressor is not None:
            chunk = self._compressor.compress(chunk) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        self.last_write = time.monotonic()
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _start(self) -> None:
        if self.is_started:
            return
        self.is_started = True
        headers = list(_HEADERS)
        if self._compressor is not None:
            headers += [(b"content-encoding", b"gzip"), (b"vary", b"accept-encoding")]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (`gzip`, `gzip;q=0.5`, not `gzip;q=0`)."""
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() != "gzip":
            continue
        quality = params.strip().lower().removeprefix("q=")
        if not params.strip():
            return True
        try:
            return float(quality) > 0
        except ValueError:
            return False
    return False
