"""Context: what a model may ask about its call. Declare a parameter `ctx: Context` to get it.

It is injected by the server, never sent on the wire, and absent from the schema.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import MappingProxyType

__all__ = ("Context",)


class Context:
    """The call a model is serving: metadata, deadline, peer, and whether it was cancelled.

    `is_cancelled` matters to sync models running in a worker thread, which cannot receive
    the cancellation an async model gets as `CancelledError`: check it between steps.
    """

    __slots__ = ("_cancelled", "_deadline", "metadata", "peer", "request_id", "timestamp")

    def __init__(
        self,
        metadata: Mapping[str, str] | None = None,
        *,
        deadline: float | None = None,
        peer: str | None = None,
        request_id: str = "",
    ) -> None:
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        """The caller's request metadata (the last value of each key)."""
        self.peer = peer
        """The caller's address, `host:port`, when known."""
        self.request_id = request_id
        """The call's id: the caller's `x-request-id`, or one the server made. Log it."""
        self.timestamp: int | None = None
        """On an Open Inference Protocol stream, the position of the request being served: the
        caller's `timestamp` parameter if it sent one, else a counter from 0 per stream."""
        self._deadline = deadline
        self._cancelled = threading.Event()

    @property
    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline; None when the call has none."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    @property
    def is_cancelled(self) -> bool:
        """The caller cancelled, disconnected or passed its deadline."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Mark the call cancelled (the server does this; tests may too)."""
        self._cancelled.set()
