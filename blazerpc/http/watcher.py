"""Watching a call's connection once its request is in: a caller who leaves stops the call.

After the body's last chunk, ASGI's `receive()` only ever says `http.disconnect`. The watcher
waits for it and cancels the call's task, and meanwhile sends a keep-alive comment on an event
stream that has been idle for `keepalive_s`, so proxies do not time the stream out.
"""

from __future__ import annotations

import asyncio
import time

from blazerpc.http.body import Receive
from blazerpc.http.sse import EventStream

__all__ = ("ConnectionWatcher",)


class ConnectionWatcher:
    """One call's watcher task: started when the body is read, stopped when the answer ends."""

    def __init__(self, receive: Receive, events: EventStream | None, keepalive_s: float) -> None:
        self._receive = receive
        self._events = events
        self._keepalive_s = keepalive_s
        self._call = asyncio.current_task()
        self._task: asyncio.Task[None] | None = None
        self.is_disconnected = False

    @property
    def is_started(self) -> bool:
        """Whether the watcher runs (or ran) for this call."""
        return self._task is not None

    def start(self) -> None:
        """Watch from now on."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._watch())

    def stop(self) -> None:
        """Stop watching: the response is about to complete."""
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        message = asyncio.ensure_future(self._receive())
        events = self._events
        try:
            while True:
                timeout = None
                if events is not None:
                    timeout = max(0.0, events.last_write + self._keepalive_s - time.monotonic())
                await asyncio.wait({message}, timeout=timeout)
                if message.done():
                    if message.result()["type"] == "http.disconnect":
                        self.is_disconnected = True
                        if self._call is not None:
                            self._call.cancel()
                        return
                    message = asyncio.ensure_future(self._receive())
                elif (
                    events is not None and time.monotonic() - events.last_write >= self._keepalive_s
                ):
                    await events.keep_alive()
        finally:
            message.cancel()
