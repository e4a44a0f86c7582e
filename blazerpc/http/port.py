"""One HTTP call as a CallPort, composed of pieces with one reason each.

The route picks how the body becomes request messages (body.py: `OneDocument`,
`NdjsonLines`) and how the call answers (answer.py: `JsonAnswer`, `EventAnswer`); the port
adds the caller's deadline (`X-Request-Timeout`) and the connection watcher (watcher.py), and
runs the call through the Boundary (`run_http_call`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from blazerpc.context import Context
from blazerpc.errors import DeadlineExceededError, WireError, cancelled_status, to_status
from blazerpc.http.answer import Answer, body_http_status
from blazerpc.http.body import Receive, RequestBody, Requests
from blazerpc.http.requestids import scope_request_id
from blazerpc.http.sse import Send, accepts_gzip
from blazerpc.http.watcher import ConnectionWatcher
from blazerpc.runtime.boundary import Boundary, Limits
from blazerpc.schema.spec import ModelSpec

__all__ = (
    "TIMEOUT_HEADER",
    "AnswerKind",
    "BodyCodec",
    "HttpPort",
    "RequestsKind",
    "Scope",
    "run_http_call",
    "scope_peer",
    "uncancel",
)

Scope = MutableMapping[str, Any]
RequestsKind = Callable[[RequestBody], Requests]
"""`OneDocument` or `NdjsonLines`."""
AnswerKind = Callable[..., Answer]
"""`JsonAnswer` or `EventAnswer` (or a partial of it): called as `(send, gzip=...)`."""

TIMEOUT_HEADER = "x-request-timeout"
"""Seconds the caller will wait: the call's deadline, as grpc-timeout is over gRPC."""


class BodyCodec(Protocol):
    """How one HTTP route reads request bodies and writes results (JsonCodec is one)."""

    @property
    def model(self) -> ModelSpec:
        """The model called."""
        ...

    def decode(self, body: bytes) -> dict[str, Any]:
        """One request message's fields; WireError naming the field if they do not fit."""
        ...

    def encode(self, result: object) -> bytes:
        """One result or item as JSON; ResultError if the schema does not allow it."""
        ...


class HttpPort:
    """One HTTP call as a CallPort: request messages from the body, results to the answer."""

    transport = "http"

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        codec: BodyCodec,
        limits: Limits,
        keepalive_s: float,
        *,
        requests: RequestsKind,
        answer: AnswerKind,
    ) -> None:
        self._scope = scope
        self._codec = codec
        self._limits = limits
        self._headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        self._body = RequestBody(receive, limits, self._headers.get("content-length", ""))
        self._requests = requests(self._body)
        self._answer = answer(send, gzip=accepts_gzip(self._headers.get("accept-encoding", "")))
        self._watcher = ConnectionWatcher(receive, self._answer.events, keepalive_s)
        self._deadline = _RequestDeadline(self._headers.get(TIMEOUT_HEADER))
        self.request_id = scope_request_id(scope)

    @property
    def model(self) -> str:
        """The model called, for messages."""
        return self._codec.model.name

    @property
    def is_disconnected(self) -> bool:
        """The caller left, while sending its body or after."""
        return self._body.is_disconnected or self._watcher.is_disconnected

    @property
    def is_past_deadline(self) -> bool:
        """The caller's X-Request-Timeout ran out."""
        return self._deadline.has_passed

    @property
    def is_abandoned(self) -> bool:
        """The caller left or its deadline passed: why this call's task was cancelled."""
        return self.is_disconnected or self.is_past_deadline

    @property
    def peer(self) -> str | None:
        return scope_peer(self._scope)

    @property
    def deadline(self) -> float | None:
        return self._deadline.at

    def context(self) -> Context:
        at = self._deadline.at
        remaining = None if at is None else at - asyncio.get_running_loop().time()
        return Context(
            self._headers,
            deadline=None if remaining is None else time.monotonic() + remaining,
            peer=self.peer,
            request_id=self.request_id,
        )

    def cancelled_status(self) -> Status:
        return cancelled_status(is_past_deadline=self.is_past_deadline)

    def deadline_message(self) -> str:
        """Why a call past its deadline ended, naming the header that set it."""
        return (
            f"the call did not finish within its deadline ({TIMEOUT_HEADER}: "
            f"{self._deadline.timeout_s} s); allow more time, or ask for less."
        )

    async def receive(self) -> dict[str, Any] | None:
        self._deadline.check_header()
        fields = await self._requests.next(self._codec.decode)
        if self._requests.is_exhausted and not self._watcher.is_started:
            # every request is taken: the connection can only say "gone" now, and keep-alives
            # may start (before, a bad line must still be able to answer with its own status)
            self._watcher.start()
        return fields

    async def send(self, result: object) -> None:
        data = self._codec.encode(result)
        self._limits.check_response(len(data), self._codec.model.name)
        await self._answer.result(data)

    async def finish(self) -> None:
        """The call succeeded: send its result, or end its event stream."""
        self.stop()
        await self._answer.finish()

    async def fail(self, status: Status, message: str) -> None:
        """The call failed: an HTTP error if nothing was sent yet, else an error event; 408
        when the request body stopped arriving, 413 when it was too large."""
        self.stop()
        body = self._body
        http_status = body_http_status(
            status, has_stalled=body.has_stalled, is_too_large=body.is_too_large
        )
        await self._answer.fail(status, message, http_status=http_status)

    def stop(self) -> None:
        """Stop watching the connection and the clock: the response is about to complete."""
        self._watcher.stop()
        self._deadline.cancel()


class _RequestDeadline:
    """The caller's `X-Request-Timeout`: when it runs out, the call's task is cancelled."""

    def __init__(self, header: str | None) -> None:
        self.timeout_s: float | None = None
        self.at: float | None = None
        """The deadline on the event loop's clock, if the caller set one."""
        self.has_passed = False
        self._error: WireError | None = None
        self._timer: asyncio.TimerHandle | None = None
        if header is None:
            return
        try:
            seconds = float(header)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            self._error = WireError(
                f"header {TIMEOUT_HEADER}: {header!r} is not a number of seconds above 0; "
                "send for example 2.5."
            )
            return
        loop = asyncio.get_running_loop()
        self.timeout_s = seconds
        self.at = loop.time() + seconds
        self._timer = loop.call_at(self.at, self._passed, asyncio.current_task())

    def check_header(self) -> None:
        """A malformed header fails the call with INVALID_ARGUMENT, at its first read."""
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _passed(self, call: asyncio.Task[Any] | None) -> None:
        self.has_passed = True
        if call is not None:
            call.cancel()


def scope_peer(scope: Scope) -> str | None:
    """The caller's `host:port`, as the ASGI scope has it."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


async def run_http_call(boundary: Boundary, port: HttpPort) -> None:
    """Run one HTTP call through the boundary, and answer it: result, events or error."""
    try:
        await boundary.run(port)
    except GRPCError as error:
        await port.fail(error.status, error.message or "")
        return
    except asyncio.CancelledError:
        if not port.is_abandoned:
            raise
        uncancel()
        if port.is_past_deadline and not port.is_disconnected:
            await port.fail(*to_status(DeadlineExceededError(port.deadline_message()), port.model))
        return
    finally:
        port.stop()
    await port.finish()


def uncancel() -> None:
    """Take back the cancellation of the current task: the caller left, nobody else asked."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()
