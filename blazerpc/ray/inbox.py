"""StreamInbox: a client's stream on its way from the front door to the replica serving it.

Ray Serve hands a replica its arguments once; a client or bidirectional stream keeps sending.
The front door puts each message here as it arrives and the replica takes them in order: one
small actor per front door, holding a few messages per stream (so a slow model slows its
client down through HTTP/2 flow control, and memory stays bounded).

Ray runs an actor's calls at least once and, for an async actor, in any order: a call retried
after a transient network error may run twice, late (github.com/ray-project/ray/pull/47659).
So messages are numbered, every call can run again without effect, and a discarded stream is
remembered: its late `open` does not bring it back.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ("StreamInbox",)

DEPTH = 4
"""Messages held per stream (the one being taken included) before the front door's `put`
waits."""
_REMEMBERED = 32768
"""Discarded streams remembered (the oldest are forgotten): about 5 MB at most. A repeated
`open` arriving after this many later streams ended would keep its stream (one small leak)."""


class _Stream:
    __slots__ = ("first", "is_closed", "items", "readable", "writable")

    def __init__(self) -> None:
        self.items: dict[int, Any] = {}
        """Messages by number, from `first` (the one being taken) on; None is the client's
        last."""
        self.first = 0
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.is_closed = False

    @property
    def following(self) -> int:
        """The number of the next message to arrive."""
        return self.first + len(self.items)


_GONE = _Stream()
_GONE.is_closed = True


class StreamInbox:
    """The streams in transit, by id. An async actor: every method is one short step."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        self._discarded: dict[str, None] = {}

    async def open(self, stream_id: str) -> None:
        """Make room for a stream, before its call is sent to a replica."""
        if stream_id not in self._discarded:
            self._streams.setdefault(stream_id, _Stream())

    def _stream(self, stream_id: str) -> _Stream:
        """The stream; a closed stand-in once it was discarded (a late put or take ends)."""
        return self._streams.get(stream_id) or _GONE

    async def put(self, stream_id: str, index: int, fields: dict[str, Any] | None) -> bool:
        """Add the stream's message `index` (None: the client sent its last); False once the
        stream was discarded (its call is over)."""
        stream = self._stream(stream_id)
        while len(stream.items) >= DEPTH and index >= stream.following and not stream.is_closed:
            stream.writable.clear()
            await stream.writable.wait()
        if stream.is_closed:
            return False
        if index == stream.following:  # not a repeat of a message kept or taken already
            stream.items[index] = fields
            stream.readable.set()
        return True

    async def take(self, stream_id: str, index: int) -> dict[str, Any] | None:
        """The stream's message `index`, once it arrives (asking for it says every earlier one
        arrived); None once the client sent its last or the call ended."""
        stream = self._stream(stream_id)
        if index < stream.first:
            return None  # a late repeat: its caller has its answer
        while stream.first < min(index, stream.following):
            del stream.items[stream.first]
            stream.first += 1
            stream.writable.set()
        while index not in stream.items and not stream.is_closed:
            stream.readable.clear()
            await stream.readable.wait()
        return stream.items.get(index)

    async def discard(self, stream_id: str) -> None:
        """The call is over: forget the stream and wake whoever still waits on it."""
        self._discarded.pop(stream_id, None)  # a repeat is remembered from now on
        self._discarded[stream_id] = None
        if len(self._discarded) > _REMEMBERED:
            del self._discarded[next(iter(self._discarded))]
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.is_closed = True
            stream.items.clear()
            stream.readable.set()
            stream.writable.set()

    async def count(self) -> int:
        """Streams in transit now (tests check none is left behind)."""
        return len(self._streams)
