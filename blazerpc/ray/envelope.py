"""What the front door and a model's replicas send each other through Ray (pickled by Ray).

A call crosses as one `RemoteRequest`; a failure comes back as a `RemoteFailure` value, already
worded by the replica (`errors.to_status`), so the caller gets the status and message it would
get from `blaze serve`, not a Ray exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ("RemoteFailure", "RemoteRequest")


@dataclass(slots=True)
class RemoteRequest:
    """One call, as a replica needs it: the first request's fields and who called."""

    fields: dict[str, Any] | None
    """The call's first request message, decoded (None: a client stream that sent none)."""
    request_id: str
    peer: str | None
    metadata: dict[str, str] | None
    """The caller's metadata, sent only to a model that takes a Context."""
    timeout: float | None
    """Seconds left before the caller's deadline when the call left the front door."""
    inbox: Any = None
    """For a client stream: the `StreamInbox` actor its next messages wait in."""
    stream_id: str = ""


@dataclass(frozen=True, slots=True)
class RemoteFailure:
    """How a call failed in its replica: the status (its number) and the message to answer,
    in full and redacted (they differ for INTERNAL: the front door's config chooses)."""

    status: int
    message: str
    redacted: str
