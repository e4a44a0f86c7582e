"""How an HTTP call answers: one JSON document, or Server-Sent Events, and its errors.

A status that ends a call becomes an HTTP status (`HTTP_STATUS`) with a JSON body
`{"code", "message"}` if nothing was sent yet, else an `event: error` carrying the same JSON.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec
from grpclib.const import Status
from starlette.responses import Response

from blazerpc.errors import to_status
from blazerpc.http.sse import EventStream, Send

__all__ = (
    "HTTP_STATUS",
    "Answer",
    "EventAnswer",
    "JsonAnswer",
    "OPENAI_PREFIXES",
    "ErrorBody",
    "body_http_status",
    "error_body",
    "failure_response",
    "open_inference_error_body",
    "open_inference_error_event",
    "openai_error_body",
    "route_error_body",
    "send_failure",
    "send_json",
    "status_of_http",
)

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

_OFF_ROUTE = {
    404: Status.NOT_FOUND,
    405: Status.UNIMPLEMENTED,
    408: Status.DEADLINE_EXCEEDED,
    413: Status.RESOURCE_EXHAUSTED,
    426: Status.FAILED_PRECONDITION,
    431: Status.RESOURCE_EXHAUSTED,
}


def body_http_status(status: Status, *, has_stalled: bool, is_too_large: bool) -> int | None:
    """408 or 413 when the request body itself failed the call (it stopped arriving, or it was
    too large); None otherwise, even after such a body, if a model caught it and failed anew."""
    if has_stalled and status is Status.DEADLINE_EXCEEDED:
        return 408
    if is_too_large and status is Status.RESOURCE_EXHAUSTED:
        return 413
    return None


def status_of_http(code: int) -> Status:
    """The `code` of a JSON error a request no model route took gets (404: NOT_FOUND, ...)."""
    return _OFF_ROUTE.get(code, Status.UNKNOWN)


_GZIP_MIN_BYTES = 1024
_OPEN_INFERENCE = "/v2"


ErrorBody = Callable[[Status, str], bytes]
"""How a route family words an error: `error_body`, or `open_inference_error_body`."""


def error_body(status: Status, message: str) -> bytes:
    """`{"code": "INVALID_ARGUMENT", "message": "..."}`, in the body or an error event."""
    return msgspec.json.encode({"code": status.name, "message": message})


def open_inference_error_body(status: Status, message: str) -> bytes:
    """The Open Inference Protocol's `{"error": "..."}`: what its clients read."""
    return msgspec.json.encode({"error": message})


def open_inference_error_event(status: Status, message: str) -> bytes:
    """An `event: error` of an Open Inference stream: the protocol's `error`, and the status
    (a stream's failure has no HTTP status to carry it)."""
    return msgspec.json.encode({"error": message, "code": status.name})


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_FIELD_PATH = re.compile(r"^field '([^']+)'")
OPENAI_PREFIXES = ("/v1/", "/openai/v1/")
"""Where the OpenAI-compatible routes live: `/v1`, and KServe's `/openai/v1`."""


def openai_error_body(status: Status, message: str, http_status: int | None = None) -> bytes:
    """OpenAI's `{"error": {"message", "type", "param", "code"}}`: what its clients raise
    with. `param` is the request field at fault, when the message names one; the type
    follows the HTTP status the error goes out with (413 is no rate limit)."""
    field = _FIELD_PATH.match(message)
    error_type = _OPENAI_TYPES.get(http_status or HTTP_STATUS.get(status, 500), "server_error")
    is_model = status is Status.NOT_FOUND and "model" in message.split(";")[0]
    code = "model_not_found" if is_model else status.name.lower()
    return msgspec.json.encode(
        {
            "error": {
                "message": message,
                "type": error_type,
                "param": field[1] if field else None,
                "code": code,
            }
        }
    )


def route_error_body(path: str, status: Status, message: str) -> bytes:
    """An error in the shape of its route family: the Open Inference Protocol's
    `{"error": "..."}` under `/v2`, OpenAI's under `/v1`, `{"code", "message"}` elsewhere."""
    if path == _OPEN_INFERENCE or path.startswith(f"{_OPEN_INFERENCE}/"):
        return open_inference_error_body(status, message)
    if path.startswith(OPENAI_PREFIXES):
        return openai_error_body(status, message)
    return error_body(status, message)


class Answer(Protocol):
    """One call's response: its results as they come, then success or failure."""

    @property
    def events(self) -> EventStream | None:
        """The event stream, when the answer is one (the connection watcher keeps it alive)."""
        ...

    async def result(self, data: bytes) -> None:
        """One encoded result, or one streamed item."""
        ...

    async def finish(self) -> None:
        """The call succeeded: complete the response."""
        ...

    async def fail(self, status: Status, message: str, *, http_status: int | None = None) -> None:
        """The call failed: an HTTP error if nothing was sent yet (`http_status`, or the
        status's own), else an error event."""
        ...


class JsonAnswer:
    """One JSON document, sent when the call succeeds (gzipped when asked and large)."""

    events = None

    def __init__(self, send: Send, *, gzip: bool, errors: ErrorBody = error_body) -> None:
        self._send = send
        self._gzip = gzip
        self._errors = errors
        self._result = b"{}"

    async def result(self, data: bytes) -> None:
        self._result = data

    async def finish(self) -> None:
        await send_json(self._send, 200, self._result, compress=self._gzip)

    async def fail(self, status: Status, message: str, *, http_status: int | None = None) -> None:
        await send_error(self._send, status, message, http_status=http_status, body=self._errors)


class EventAnswer:
    """Server-Sent Events: one `data:` event per item, then `event: end` if `ends_with_event`."""

    def __init__(
        self,
        send: Send,
        *,
        gzip: bool,
        ends_with_event: bool = True,
        errors: ErrorBody = error_body,
        event_errors: ErrorBody = error_body,
    ) -> None:
        self._send = send
        self._errors = errors
        self._event_errors = event_errors
        self.events = EventStream(send, gzip=gzip)
        self._ends_with_event = ends_with_event
        self._items = 0

    async def result(self, data: bytes) -> None:
        self._items += 1
        await self.events.data(data)

    async def finish(self) -> None:
        if self._ends_with_event:
            await self.events.named(b"end", b'{"items":%d}' % self._items)
        await self.events.end()

    async def fail(self, status: Status, message: str, *, http_status: int | None = None) -> None:
        if not self.events.is_started:
            await send_error(
                self._send, status, message, http_status=http_status, body=self._errors
            )
            return
        await self.events.named(b"error", self._event_errors(status, message))
        await self.events.end()


def failure_response(error: Exception, model: str, *, body: ErrorBody = error_body) -> Response:
    """A call refused before it reached a model, as a whole starlette Response (a GET route's
    answer): the status errors.to_status picks, worded by its route family's `body`."""
    status, message = to_status(error, model)
    return Response(body(status, message), HTTP_STATUS[status], media_type="application/json")


async def send_failure(
    send: Send, error: Exception, model: str, *, body: ErrorBody = error_body
) -> None:
    """A call refused before it reached a model: the status errors.to_status picks, as JSON."""
    await send_error(send, *to_status(error, model), body=body)


async def send_error(
    send: Send,
    status: Status,
    message: str,
    *,
    http_status: int | None = None,
    body: ErrorBody = error_body,
) -> None:
    """A whole error response: `http_status` (else the status's own) and `{"code", "message"}`.

    408 (the request stopped arriving) closes the connection: the rest of a body that did
    not come may still, and must not be read as the next request.
    """
    code = http_status or HTTP_STATUS.get(status, 500)
    await send_json(send, code, body(status, message), retry=True, close=code == 408)


async def send_json(
    send: Send,
    status: int,
    body: bytes,
    *,
    compress: bool = False,
    retry: bool = False,
    close: bool = False,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """A whole JSON response; gzipped when asked and large, with Retry-After on 429 and 503."""
    headers = [(b"content-type", b"application/json"), *extra_headers]
    if close:
        headers.append((b"connection", b"close"))
    if compress and len(body) >= _GZIP_MIN_BYTES:
        body = gzip.compress(body, compresslevel=6)
        headers += [(b"content-encoding", b"gzip"), (b"vary", b"accept-encoding")]
    if retry and status in (429, 503):
        headers.append((b"retry-after", b"1"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
