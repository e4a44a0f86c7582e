"""The exception hierarchy, and the only place an exception becomes a gRPC status."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from grpclib.const import Status

__all__ = (
    "BlazeError",
    "BreakingChangeError",
    "DeadlineExceededError",
    "DefinitionError",
    "LifespanError",
    "LimitError",
    "ModelError",
    "QueueFullError",
    "ResultError",
    "NOT_RUN",
    "REFUSED_HEADER",
    "RpcError",
    "StalledError",
    "Status",
    "StreamEndedError",
    "TargetError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnknownModelError",
    "UnknownNameError",
    "UnsupportedCallError",
    "WireError",
    "cancelled_status",
    "to_status",
    "to_status_both_ways",
)

log = logging.getLogger(__name__)


class BlazeError(Exception):
    """Base class of every error blazerpc raises on purpose."""


class DefinitionError(BlazeError, TypeError):
    """A model cannot be served as written; raised when it is decorated, never at request time.

    The message names the model, the function, the parameter, the problem and the fix.
    """


class BreakingChangeError(BlazeError):
    """The schema changed in a way that breaks callers built against the lock file."""

    def __init__(self, changes: list[str]) -> None:
        super().__init__("; ".join(changes))
        self.changes = changes


class TargetError(BlazeError):
    """A `module:attr` target given to the command line does not lead to a BlazeApp."""


class WireError(BlazeError, ValueError):
    """Bytes that do not match the schema; the message names the field path to fix."""


class ResultError(BlazeError):
    """A model returned a value its annotation does not allow: a server bug, not the caller's."""


class ModelError(BlazeError):
    """Raise it in a model to answer with a chosen status: `ModelError(Status.NOT_FOUND, "...")`."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class UnknownNameError(BlazeError, LookupError):
    """A call asks for something by a name the server does not know: a symbol, a service."""


class UnknownModelError(UnknownNameError):
    """A call names a model the server does not serve; the message lists those it does."""

    @classmethod
    def no_model(
        cls, name: str, served: Iterable[str] | None, *, see: str = ""
    ) -> UnknownModelError:
        """`there is no model named 'x'; this server serves: a, b.`, then where to look.

        `served` None: the names are not for this caller (a probe route, open without a key).
        """
        message = f"there is no model named {name!r}"
        if served is not None:
            message += f"; this server serves: {', '.join(served) or 'none'}"
        message += "."
        return cls(f"{message} {see}" if see else message)


class UnsupportedCallError(BlazeError):
    """The model exists but does not answer this kind of call; the message names the one to use."""


class DeadlineExceededError(BlazeError):
    """The caller's deadline passed before the work started."""


class StalledError(DeadlineExceededError):
    """A request message started and then stopped arriving for longer than message_timeout."""


class LimitError(BlazeError):
    """A call went past a server limit (message size, open streams): refused, never queued."""


class QueueFullError(LimitError):
    """A batched model's queue is full: the call is refused at once, not queued."""


class UnavailableError(BlazeError):
    """The server is loading its models or shutting down: retry, on another replica if any."""


class UnauthenticatedError(BlazeError):
    """A call came without a valid API key; the message says how to send one, never which exist."""


class LifespanError(BlazeError):
    """An app's lifespan hook failed, so the server cannot serve; the message names the hook."""


class StreamEndedError(BlazeError):
    """Raised in a sync model waiting for its client's next message when the call has ended."""


REFUSED_HEADER = "x-blazerpc-refused"
"""A trailer of a failed call whose model never ran (not admitted): a client may send it again
elsewhere without running the model twice."""
NOT_RUN = "not-run"
"""GRPCError's `details` on a call refused before its model ran (the transport then sends
REFUSED_HEADER)."""


class RpcError(BlazeError):
    """A call failed: `.status` is the gRPC status and `.message` says why.

    `.request_id` is the call's id (`x-request-id`) when the server sent one: the server's log
    lines of this call carry it.
    """

    def __init__(
        self,
        status: Status,
        message: str,
        *,
        request_id: str | None = None,
        refused: bool = False,
    ) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message
        self.request_id = request_id
        self.refused = refused
        """The server refused the call before its model ran (loading, draining, a GOAWAY, no
        connection): safe to send again, to another server."""


def to_status(
    error: Exception,
    model: str,
    *,
    service: str = "",
    request_id: str = "",
    redact: bool = False,
) -> tuple[Status, str]:
    """The status and message a failed call answers with; logs once, as STYLE.md says.

    Expected failures log at INFO without a traceback; anything else is INTERNAL and logs its
    traceback, because it is a bug in the model. A call to a standard service rather than a
    model (health, reflection) names the service instead of `model`.

    An INTERNAL message names the call's `request_id`, which its log line carries too; with
    `redact` it says no more than that (the exception text stays in the server's log).
    """
    if isinstance(error, WireError):
        status, message = Status.INVALID_ARGUMENT, str(error)
    elif isinstance(error, ModelError):
        status, message = error.status, error.message
    elif isinstance(error, DeadlineExceededError):
        status, message = Status.DEADLINE_EXCEEDED, str(error)
    elif isinstance(error, LimitError):
        status, message = Status.RESOURCE_EXHAUSTED, str(error)
    elif isinstance(error, UnavailableError):
        status, message = Status.UNAVAILABLE, str(error)
    elif isinstance(error, UnknownNameError):
        status, message = Status.NOT_FOUND, str(error)
    elif isinstance(error, UnsupportedCallError):
        status, message = Status.UNIMPLEMENTED, str(error)
    elif isinstance(error, UnauthenticatedError):
        status, message = Status.UNAUTHENTICATED, str(error)
    else:
        return Status.INTERNAL, _internal(error, model, request_id, redact)
    if service:
        log.info("%s: %s: %s", service, status.name, message)
    else:
        log.info("model %r: %s: %s", model, status.name, message)
    return status, message


def _internal(error: Exception, model: str, request_id: str, redact: bool) -> str:
    """Log a bug in a model (with its traceback) and word what its caller is told."""
    what, detail = _bug(error)
    tag = f" [request id {request_id}]" if request_id else ""
    exc_info = None if isinstance(error, ResultError) else error
    log.error("model %r %s%s: %s", model, what, tag, detail, exc_info=exc_info)
    full, redacted = _internal_messages(error, model, request_id)
    return redacted if redact else full


def to_status_both_ways(
    error: Exception, model: str, *, request_id: str = ""
) -> tuple[Status, str, str]:
    """`to_status`, with the message both in full and redacted (they differ for INTERNAL
    only): for a failure worded where it happened and answered by a server elsewhere, whose
    config picks one (a Ray replica and its front door). Logs once."""
    status, message = to_status(error, model, request_id=request_id)
    if status is not Status.INTERNAL:
        return status, message, message
    full, redacted = _internal_messages(error, model, request_id)
    return status, full, redacted


def _internal_messages(error: Exception, model: str, request_id: str) -> tuple[str, str]:
    """What the caller of a model that failed with a bug is told: in full, and redacted
    (the model and the request id only). Logs nothing."""
    what, detail = _bug(error)
    said = f"model {model!r} {what}"
    tag = f" (request id {request_id})" if request_id else ""
    return f"{said}: {detail}{tag}", f"{said}{tag}; the server's log has the details."


def _bug(error: Exception) -> tuple[str, str]:
    if isinstance(error, ResultError):
        return "returned an invalid result", str(error)
    return "failed", f"{type(error).__name__}: {error}"


def cancelled_status(*, is_past_deadline: bool) -> Status:
    """Why a cancelled call ended: DEADLINE_EXCEEDED once its deadline passed, else CANCELLED."""
    return Status.DEADLINE_EXCEEDED if is_past_deadline else Status.CANCELLED
