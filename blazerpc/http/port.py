"""One HTTP call as a CallPort: a JSON or newline-delimited JSON body in, JSON or events out.

`HttpPort` serves `POST /models/{name}` (websocket.py serves the WebSocket route). A status that
ends a call becomes an HTTP status (`HTTP_STATUS`) with a JSON body if nothing was sent yet,
else an `event: error` carrying the same JSON.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

import msgspec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from blazerpc.context import Context
from blazerpc.errors import DeadlineExceededError, WireError, cancelled_status, to_status
from blazerpc.http.sse import EventStream, Send, accepts_gzip
from blazerpc.runtime.boundary import Boundary, Limits
from blazerpc.schema.spec import ModelSpec

__all__ = (
    "HTTP_STATUS",
    "TIMEOUT_HEADER",
    "BodyCodec",
    "HttpPort",
    "Receive",
    "Scope",
    "error_body",
    "run_http_call",
    "send_failure",
    "send_json",
    "uncancel",
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Any]

HTTP_STATUS = {
    Status.OK: 200,
    Status.CANCELLED: 499,
    Status.UNKNOWN: 500,
    Status.INVALID_ARGUMENT: 400,
    Status.DEADLINE_EXCEEDED: 504,
    Status.NOT_FOUND: 404,
    Status.ALREADY_EXISTS: 409,
    Status.PERMISSION_DENIED: 403,
    Status.RESOURCE_EXHAUSTED: 429,
    Status.FAILED_PRECONDITION: 400,
    Status.ABORTED: 409,
    Status.OUT_OF_RANGE: 400,
    Status.UNIMPLEMENTED: 501,
    Status.INTERNAL: 500,
    Status.UNAVAILABLE: 503,
    Status.DATA_LOSS: 500,
    Status.UNAUTHENTICATED: 401,
}
"""The HTTP status a call answers with when it fails before its first byte."""

TIMEOUT_HEADER = "x-request-timeout"
"""Seconds the caller will wait: the call's deadline, as grpc-timeout is over gRPC."""

_GZIP_MIN_BYTES = 1024


def error_body(status: Status, message: str) -> bytes:
    """`{"code": "INVALID_ARGUMENT", "message": "..."}`, in the body or an error event."""
    return msgspec.json.encode({"code": status.name, "message": message})


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
    """One HTTP call as a CallPort: the request body in, JSON or events out.

    By default the model's shape decides: a client stream is read as newline-delimited JSON,
    a server stream answers events ending with `event: end`. The Open Inference routes read
    one document and choose events by route (`reads_lines`, `events`, `end_event`).
    """

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
        reads_lines: bool | None = None,
        events: bool | None = None,
        end_event: bool = True,
    ) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._codec = codec
        self._limits = limits
        self._keepalive_s = keepalive_s
        self._headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        self._gzip = accepts_gzip(self._headers.get("accept-encoding", ""))
        shape = codec.model.shape
        self._reads_stream = shape.is_client_streaming if reads_lines is None else reads_lines
        streams = shape.is_server_streaming if events is None else events
        self._events = EventStream(send, gzip=self._gzip) if streams else None
        self._end_event = end_event
        self._result: bytes | None = None
        self._items = 0
        self._body = bytearray()
        self._more_body = True
        self._messages_read = 0
        self._is_read = False
        self._task = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._header_error: WireError | None = None
        self._timeout_s = self._read_timeout()
        self._deadline: float | None = None
        if self._timeout_s is not None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.time() + self._timeout_s
            self._timer = loop.call_at(self._deadline, self._deadline_passed)
        self.is_disconnected = False
        self.is_past_deadline = False

    @property
    def model(self) -> str:
        """The model called, for messages."""
        return self._codec.model.name

    @property
    def is_abandoned(self) -> bool:
        """The caller left or its deadline passed: why this call's task was cancelled."""
        return self.is_disconnected or self.is_past_deadline

    @property
    def peer(self) -> str | None:
        client = self._scope.get("client")
        return f"{client[0]}:{client[1]}" if client else None

    @property
    def deadline(self) -> float | None:
        return self._deadline

    def context(self) -> Context:
        remaining = None
        if self._deadline is not None:
            remaining = self._deadline - asyncio.get_running_loop().time()
        return Context(
            self._headers,
            deadline=None if remaining is None else time.monotonic() + remaining,
            peer=self.peer,
        )

    def cancelled_status(self) -> Status:
        return cancelled_status(is_past_deadline=self.is_past_deadline)

    def deadline_message(self) -> str:
        return (
            f"the call did not finish within its deadline ({TIMEOUT_HEADER}: "
            f"{self._timeout_s} s); allow more time, or ask for less."
        )

    async def receive(self) -> dict[str, Any] | None:
        if self._header_error is not None:
            raise self._header_error
        if self._reads_stream:
            line = await self._next_line()
            if line is None:
                self._body_read()
                return None
            self._messages_read += 1
            try:
                return self._codec.decode(line)
            except WireError as err:
                raise WireError(f"request line {self._messages_read}: {err}") from None
        if self._is_read:
            return None
        body = await self._read_all()
        self._body_read()
        return self._codec.decode(body)

    async def send(self, result: object) -> None:
        data = self._codec.encode(result)
        self._limits.check_response(len(data), self._codec.model.name)
        if self._events is None:
            self._result = data
            return
        self._items += 1
        await self._events.data(data)

    async def finish(self) -> None:
        """The call succeeded: send its result, or end its event stream."""
        self.stop()
        if self._events is not None:
            if self._end_event:
                await self._events.named(b"end", b'{"items":%d}' % self._items)
            await self._events.end()
            return
        await send_json(self._send, 200, self._result or b"{}", compress=self._gzip)

    async def fail(self, status: Status, message: str) -> None:
        """The call failed: an HTTP error if nothing was sent yet, else an error event."""
        self.stop()
        body = error_body(status, message)
        if self._events is not None and self._events.is_started:
            await self._events.named(b"error", body)
            await self._events.end()
            return
        await send_json(self._send, HTTP_STATUS.get(status, 500), body, retry=True)

    def stop(self) -> None:
        """Stop watching the connection: the response is about to complete."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _read_timeout(self) -> float | None:
        text = self._headers.get(TIMEOUT_HEADER)
        if text is None:
            return None
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            self._header_error = WireError(
                f"header {TIMEOUT_HEADER}: {text!r} is not a number of seconds above 0; "
                "send for example 2.5."
            )
            return None
        return seconds

    def _deadline_passed(self) -> None:
        self.is_past_deadline = True
        if self._task is not None:
            self._task.cancel()

    async def _read_all(self) -> bytes:
        declared = self._headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limits.max_request_bytes:
            raise self._limits.request_too_large(int(declared))
        while self._more_body:
            await self._read_chunk()
            if len(self._body) > self._limits.max_request_bytes:
                raise self._limits.request_too_large(len(self._body))
        return bytes(self._body)

    async def _next_line(self) -> bytes | None:
        """The next non-empty line of a newline-delimited JSON body, or None at its end."""
        body = self._body
        while True:
            newline = body.find(b"\n")
            if newline >= 0:
                line = bytes(body[:newline])
                del body[: newline + 1]
                if line.strip():
                    return line
                continue
            if len(body) > self._limits.max_request_bytes:
                raise self._limits.request_too_large(len(body))
            if not self._more_body:
                line = bytes(body)
                body.clear()
                return line if line.strip() else None
            await self._read_chunk()

    async def _read_chunk(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.is_disconnected = True
            raise asyncio.CancelledError
        self._body += message.get("body", b"")
        self._more_body = message.get("more_body", False)

    def _body_read(self) -> None:
        """The whole body is in: from now on, the connection only tells us the caller left."""
        self._is_read = True
        if self._watcher is None and not self.is_disconnected:
            self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        """Cancel the call when the caller disconnects; keep an idle event stream alive."""
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
                        if self._task is not None:
                            self._task.cancel()
                        return
                    message = asyncio.ensure_future(self._receive())
                elif (
                    events is not None and time.monotonic() - events.last_write >= self._keepalive_s
                ):
                    await events.keep_alive()
        finally:
            message.cancel()


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


async def send_failure(send: Send, error: Exception, model: str) -> None:
    """A call refused before it reached a model: the status errors.to_status picks, as JSON."""
    status, message = to_status(error, model)
    await send_json(send, HTTP_STATUS[status], error_body(status, message), retry=True)


async def send_json(
    send: Send, status: int, body: bytes, *, compress: bool = False, retry: bool = False
) -> None:
    """A whole JSON response; gzipped when asked and large, with Retry-After on 429 and 503."""
    headers = [(b"content-type", b"application/json")]
    if compress and len(body) >= _GZIP_MIN_BYTES:
        body = gzip.compress(body, compresslevel=6)
        headers += [(b"content-encoding", b"gzip"), (b"vary", b"accept-encoding")]
    if retry and status in (429, 503):
        headers.append((b"retry-after", b"1"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
