"""StreamInbox: a client's stream on its way from the front door to the replica serving it.

Ray Serve hands a replica its arguments once; a client or bidirectional stream keeps sending.
The front door puts each message here as it arrives and the replica takes them in order: one
small actor per front door, holding a few messages per stream (so a slow model slows its
client down through HTTP/2 flow control, and memory stays bounded).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ("StreamInbox",)

DEPTH = 4
"""Messages held per stream before the front door's `put` waits."""
_REMEMBERED = 4096
"""Streams discarded before their `open` arrived, remembered (the oldest are forgotten)."""


class _Stream:
    __slots__ = ("is_closed", "items", "readable", "writable")

    def __init__(self) -> None:
        self.items: deque[Any] = deque()
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.is_closed = False


_GONE = _Stream()
_GONE.is_closed = True


class StreamInbox:
    """The streams in transit, by id. An async actor: every method is one short step."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        self._discarded: dict[str, None] = {}
        """Streams discarded before they were opened: an async actor may run a caller's calls
        out of order (a call cancelled while its `open` was on the way discards at once)."""

    async def open(self, stream_id: str) -> None:
        """Make room for a stream, before its call is sent to a replica."""
        if self._discarded.pop(stream_id, 0) is None:
            return  # its call is over already
        self._streams[stream_id] = _Stream()

    def _stream(self, stream_id: str) -> _Stream:
        """The stream; a closed stand-in once it was discarded (a late put or take ends)."""
        return self._streams.get(stream_id) or _GONE

    async def put(self, stream_id: str, fields: dict[str, Any] | None) -> bool:
        """Add the stream's next message (None: the client sent its last); False once the
        stream was discarded (its call is over)."""
        stream = self._stream(stream_id)
        while len(stream.items) >= DEPTH and not stream.is_closed:
            stream.writable.clear()
            await stream.writable.wait()
        if stream.is_closed:
            return False
        stream.items.append(fields)
        stream.readable.set()
        return True

    async def take(self, stream_id: str) -> dict[str, Any] | None:
        """The stream's next message; None once the client sent its last or the call ended."""
        stream = self._stream(stream_id)
        while not stream.items and not stream.is_closed:
            stream.readable.clear()
            await stream.readable.wait()
        if not stream.items:
            return None
        fields = stream.items.popleft()
        stream.writable.set()
        return fields  # type: ignore[no-any-return]

    async def discard(self, stream_id: str) -> None:
        """The call is over: forget the stream and wake whoever still waits on it."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:  # not opened yet: remember not to
            self._discarded[stream_id] = None
            if len(self._discarded) > _REMEMBERED:
                del self._discarded[next(iter(self._discarded))]
            return
        stream.is_closed = True
        stream.items.clear()
        stream.readable.set()
        stream.writable.set()

    async def count(self) -> int:
        """Streams in transit now (tests check none is left behind)."""
        return len(self._streams)
