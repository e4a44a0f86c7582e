"""What code running in a call sees of it: `Context` for a model, `Call` for hooks.

A model declares a parameter `ctx: Context` to get its call's metadata, deadline and id; it
is injected by the server, never sent on the wire, and absent from the schema. An auth hook
and middleware (`@app.auth`, `@app.middleware`) get a `Call`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType

from blazerpc.errors import Status

__all__ = ("Call", "Context")


class Context:
    """The call a model is serving: metadata, deadline, peer, and whether it was cancelled.

    `is_cancelled` matters to sync models running in a worker thread, which cannot receive
    the cancellation an async model gets as `CancelledError`: check it between steps.
    """

    __slots__ = ("_deadline", "_is_cancelled", "metadata", "peer", "request_id", "timestamp")

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
        self._is_cancelled = False  # a bool is read whole by any thread: no Event needed

    @property
    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline; None when the call has none."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    @property
    def is_cancelled(self) -> bool:
        """The caller cancelled, disconnected or passed its deadline."""
        return self._is_cancelled

    def cancel(self) -> None:
        """Mark the call cancelled (the server does this; tests may too)."""
        self._is_cancelled = True


class Call:
    """One call, as an auth hook and middleware see it.

    Before the model runs: which model, its shape, the transport, the caller's metadata, peer
    and request id. After it (in middleware, past its `yield`): `status`, `message`,
    `duration_s` and `error`, the exception that failed the call, if one did.
    """

    __slots__ = (
        "duration_s",
        "error",
        "message",
        "metadata",
        "model",
        "peer",
        "request_id",
        "shape",
        "state",
        "status",
        "transport",
    )

    def __init__(
        self,
        model: str,
        shape: str,
        transport: str,
        context: Context,
    ) -> None:
        self.model = model
        """The model called."""
        self.shape = shape
        """`unary`, `server_streaming`, `client_streaming` or `bidirectional`."""
        self.transport = transport
        """`grpc`, `http`, `ws` or `oip` (the Open Inference Protocol over gRPC)."""
        self.metadata = context.metadata
        """The caller's metadata or headers (lowercase names; `authorization` included)."""
        self.peer = context.peer
        """The caller's `host:port`, when known."""
        self.request_id = context.request_id
        """The call's id (`x-request-id`)."""
        self.state: dict[str, object] = {}
        """Room for a middleware's own values, from before the call to after it."""
        self.status = Status.OK
        """How the call ended: set once it has (OK until then)."""
        self.message = ""
        """The status message a failed call answered with."""
        self.duration_s = 0.0
        """Seconds from the call's arrival to its status."""
        self.error: BaseException | None = None
        """What failed the call: the exception raised, or None."""
