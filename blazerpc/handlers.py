"""One adapter per shape: a user's function -> a grpclib handler, behind one error boundary.

The model side (`_Call`) sees a transport only through a `CallPort` (decoded requests in,
results out), so the HTTP gateway can drive the same calls; `_GrpcPort` is gRPC's.

- Sync functions and sync generators run in worker threads (anyio), one item at a time, so a
  slow model never blocks the event loop.
- A generator is closed as soon as its caller cancels, disconnects or passes its deadline: its
  `finally` runs at once and it produces at most one more item.
- Nothing is buffered between a generator and its stream: one awaited send per item, so a
  slow reader slows the producer.
- A stream keeps the event loop for one turn (`_TURN_S`) at most, so a generator that never
  awaits cannot starve the other streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from blazerpc.admission import Admission, Ticket
from blazerpc.batcher import Batcher
from blazerpc.codec import CARDINALITIES, ModelCodec, SchemaCodec
from blazerpc.config import ServerConfig
from blazerpc.context import Context
from blazerpc.errors import (
    LimitError,
    ResultError,
    StreamEndedError,
    UnavailableError,
    WireError,
    to_status,
)
from blazerpc.metrics import Metrics, StreamTimer
from blazerpc.schema import RESULT_FIELD, ModelSpec, ServiceSpec, Shape

__all__ = ("CallPort", "ServiceHandlers")

_DONE = object()
_PREFIX = struct.Struct(">?I")
_ENDED_BY_DRAIN = (
    "the server shut down before this call finished (its grace period ran out); "
    "retry, on another replica if there is one."
)
_TURN_S = 0.0005
"""How long a stream may keep the event loop before letting the others run (see bench/)."""
T = TypeVar("T")

access_log = logging.getLogger("blazerpc.access")
"""One INFO line per call: `model shape STATUS 1.2ms [items=N] peer=host:port`."""
RawStream = Stream[bytes, bytes]
Adapter = Callable[[RawStream], Awaitable[None]]


class ServiceHandlers:
    """grpclib's handler mapping for one schema: `/package.Service/PredictX` -> adapter."""

    def __init__(
        self,
        schema: ServiceSpec,
        codecs: SchemaCodec,
        config: ServerConfig,
        admission: Admission,
        metrics: Metrics | None = None,
    ) -> None:
        self.batchers = {
            model.name: Batcher(model, model.batching, metrics.batch_started if metrics else None)
            for model in schema.models
            if model.batching is not None
        }
        limits = _Limits(config.max_request_bytes, config.max_response_bytes)
        self._mapping = {
            schema.rpc_path(model): Handler(
                _adapter(
                    _Call(model, self.batchers.get(model.name)),
                    _port_factory(codecs.models[model.name], limits, model.name),
                    admission,
                    metrics,
                ),
                CARDINALITIES[model.shape],
                bytes,
                bytes,
            )
            for model in schema.models
        }

    def __mapping__(self) -> dict[str, Handler]:
        return self._mapping

    async def close(self) -> None:
        """Let running batches finish."""
        for batcher in self.batchers.values():
            await batcher.close()


@dataclass(frozen=True, slots=True)
class _Limits:
    max_request_bytes: int
    max_response_bytes: int


def _port_factory(
    codec: ModelCodec, limits: _Limits, model: str
) -> Callable[[RawStream], _GrpcPort]:
    return lambda stream: _GrpcPort(stream, codec, limits, model)


def _adapter(
    call: _Call,
    port_of: Callable[[RawStream], _GrpcPort],
    admission: Admission,
    metrics: Metrics | None,
) -> Adapter:
    model = call.model
    body = {
        Shape.UNARY: call.unary,
        Shape.SERVER_STREAMING: call.server_streaming,
        Shape.CLIENT_STREAMING: call.client_streaming,
        Shape.BIDIRECTIONAL: call.server_streaming,
    }[model.shape]
    times_items = metrics is not None and model.shape.is_server_streaming

    async def handle(stream: RawStream) -> None:
        tally = _Tally()
        if times_items and metrics is not None:
            tally.timer = metrics.stream_timer(model.name, tally.started)
        context = _context(stream) if model.context_parameter else None
        injected: dict[str, object] = {}
        if model.context_parameter is not None:
            injected[model.context_parameter] = context
        ticket: Ticket | None = None
        status = Status.OK
        try:
            ticket = admission.admit(model)
            await body(port_of(stream), injected, tally)
        except asyncio.CancelledError:
            if context is not None:
                context.cancel()
            if ticket is not None and ticket.is_ended_by_drain:
                ticket.task.uncancel()
                status, message = to_status(UnavailableError(_ENDED_BY_DRAIN), model.name)
                raise GRPCError(status, message) from None
            status = _why_cancelled(stream)
            raise
        except Exception as error:  # the one boundary: every failure becomes a status
            status, message = to_status(error, model.name)
            raise GRPCError(status, message) from None
        finally:
            if ticket is not None:
                admission.release(ticket)
            duration_s = time.perf_counter() - tally.started
            if tally.timer is not None:
                tally.timer.flush()
            if metrics is not None:
                metrics.call_ended(model.name, model.shape.value, status, duration_s)
            if access_log.isEnabledFor(logging.INFO):
                _log_access(model, status, duration_s, tally, stream)

    return handle


class _Tally:
    """One call's clock and item count, and its stream timer when metrics are on."""

    __slots__ = ("items", "started", "timer")

    def __init__(self) -> None:
        self.items = 0
        self.started = time.perf_counter()
        self.timer: StreamTimer | None = None

    def item_sent(self) -> None:
        self.items += 1
        if self.timer is not None:
            self.timer.item_sent()


def _why_cancelled(stream: RawStream) -> Status:
    deadline = stream.deadline
    if deadline is not None and deadline.time_remaining() <= 0:
        return Status.DEADLINE_EXCEEDED
    return Status.CANCELLED


def _log_access(
    model: ModelSpec, status: Status, duration_s: float, tally: _Tally, stream: RawStream
) -> None:
    """`generate server_streaming OK 12.3ms items=40 peer=127.0.0.1:5123`, one line per call."""
    address = stream.peer.addr() if stream.peer is not None else None
    peer = f"{address[0]}:{address[1]}" if address else "-"
    items = f" items={tally.items}" if model.shape.is_server_streaming else ""
    access_log.info(
        "%s %s %s %.1fms%s peer=%s",
        model.name,
        model.shape.value,
        status.name,
        duration_s * 1e3,
        items,
        peer,
    )


class CallPort(Protocol):
    """One call's messages, whatever the transport: decoded requests in, results out."""

    @property
    def deadline(self) -> float | None:
        """The caller's deadline on the event loop's clock, if it set one."""
        ...

    async def receive(self) -> dict[str, Any] | None:
        """The next request message's fields, or None once the caller has sent them all."""
        ...

    async def send(self, result: object) -> None:
        """Send one result (or one streamed item)."""
        ...


class _GrpcPort:
    """A gRPC call's messages: length-prefixed protobuf, within the server's size limits."""

    __slots__ = ("_codec", "_limits", "_model", "_stream")

    def __init__(self, stream: RawStream, codec: ModelCodec, limits: _Limits, model: str) -> None:
        self._stream = stream
        self._codec = codec
        self._limits = limits
        self._model = model

    @property
    def deadline(self) -> float | None:
        return _loop_deadline(self._stream)

    async def receive(self) -> dict[str, Any] | None:
        data = await _receive(self._stream, self._limits.max_request_bytes)
        return None if data is None else self._codec.request.decode(data)

    async def send(self, result: object) -> None:
        try:
            data = self._codec.response.encode({RESULT_FIELD: result})
        except WireError as err:
            raise ResultError(str(err)) from None
        if len(data) > self._limits.max_response_bytes:
            raise LimitError(
                f"model {self._model!r} produced a {len(data)}-byte response, over the "
                f"server's limit of {self._limits.max_response_bytes} bytes (max_response_bytes)."
            )
        await self._stream.send_message(data)


class _Call:
    """Runs one model for one call, whatever the transport: call (in a thread if sync), send."""

    def __init__(self, model: ModelSpec, batcher: Batcher | None) -> None:
        self.model = model
        self._batcher = batcher
        self._function: Callable[..., Any] = model.function
        self._streamed = model.streamed_parameter

    async def unary(self, port: CallPort, injected: dict[str, object], tally: _Tally) -> None:
        """One request in, one response out."""
        kwargs = await _first_request(port) | injected
        if self._batcher is not None:
            result = await self._batcher.submit(kwargs, port.deadline)
        elif self.model.is_async:
            result = await self._function(**kwargs)
        else:
            result = await anyio.to_thread.run_sync(functools.partial(self._function, **kwargs))
        await port.send(result)

    async def client_streaming(
        self, port: CallPort, injected: dict[str, object], tally: _Tally
    ) -> None:
        """The client's stream in, one response out."""
        requests = _items(port, self._streamed or "")
        if self.model.is_async:
            try:
                result = await self._function(**{self._streamed or "": requests}, **injected)
            finally:
                await requests.aclose()
        else:
            feed = _Feed(requests)
            call = functools.partial(self._function, **{self._streamed or "": feed}, **injected)
            try:
                result = await _in_thread(call, interrupt=feed.aclose)
            finally:
                await feed.aclose()
        await port.send(result)

    async def server_streaming(
        self, port: CallPort, injected: dict[str, object], tally: _Tally
    ) -> None:
        """Server and bidirectional streaming: the generator's items, one message each."""
        if self._streamed is None:
            arguments = await _first_request(port) | injected
            if self.model.is_async:
                await _stream_async(port, self._function(**arguments), tally)
            else:
                await _stream_sync(port, self._function(**arguments), tally, _no_feed)
            return
        requests = _items(port, self._streamed)
        if self.model.is_async:
            try:
                arguments = {self._streamed: requests} | injected
                await _stream_async(port, self._function(**arguments), tally)
            finally:
                await requests.aclose()
        else:
            feed = _Feed(requests)
            try:
                arguments = {self._streamed: feed} | injected
                await _stream_sync(port, self._function(**arguments), tally, feed.aclose)
            finally:
                await feed.aclose()


async def _stream_async(port: CallPort, items: Any, tally: _Tally) -> None:
    clock = asyncio.get_running_loop().time
    turn_ends = clock() + _TURN_S
    try:
        async for item in items:
            await port.send(item)
            tally.item_sent()
            if clock() >= turn_ends:  # fairness: a stream holds the loop for one turn at most
                await asyncio.sleep(0)
                turn_ends = clock() + _TURN_S
    finally:
        await items.aclose()


async def _stream_sync(
    port: CallPort,
    items: Iterator[Any],
    tally: _Tally,
    interrupt: Callable[[], Awaitable[None]],
) -> None:
    try:
        while (item := await _in_thread(next, items, _DONE, interrupt=interrupt)) is not _DONE:
            await port.send(item)
            tally.item_sent()
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            await _in_thread(close, interrupt=interrupt)


async def _first_request(port: CallPort) -> dict[str, Any]:
    fields = await port.receive()
    if fields is None:
        raise WireError("the call ended before its request message arrived.")
    return fields


async def _items(port: CallPort, field: str) -> AsyncGenerator[Any]:
    """The client's stream, decoded lazily: item 1 is handed over before item 2 arrives."""
    while (fields := await port.receive()) is not None:
        yield fields[field]


def _loop_deadline(stream: RawStream) -> float | None:
    """The caller's deadline on the event loop's clock, for the batcher."""
    if stream.deadline is None:
        return None
    return asyncio.get_running_loop().time() + stream.deadline.time_remaining()


def _context(stream: RawStream) -> Context:
    """The Context a model asked for, read off grpclib's stream."""
    remaining = stream.deadline.time_remaining() if stream.deadline is not None else None
    address = stream.peer.addr() if stream.peer is not None else None
    return Context(
        {key: value for key, value in (stream.metadata or {}).items() if isinstance(value, str)},
        deadline=None if remaining is None else time.monotonic() + remaining,
        peer=f"{address[0]}:{address[1]}" if address else None,
    )


async def _in_thread(
    function: Callable[..., T],
    *args: object,
    interrupt: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Run `function` in a worker thread; if the call is cancelled, let the thread finish first.

    `interrupt` wakes a thread that waits for the client's stream. Once the thread is done, the
    generator it stepped is idle, so it can be closed (a generator cannot be closed while
    another thread is inside it).
    """
    work = asyncio.ensure_future(anyio.to_thread.run_sync(function, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        if interrupt is not None:
            await interrupt()
        while not work.done():  # a deadline and a reset may both cancel us: wait out both
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({work})
        if not work.cancelled():
            work.exception()  # the call is over; what the thread raised goes nowhere
        raise


async def _no_feed() -> None:
    """Nothing to interrupt: the model takes no client stream."""


async def _receive(stream: RawStream, limit: int) -> bytes | None:
    """The next message, or None at the end; one declared larger than `limit` is never read.

    grpclib's own recv_message() buffers whatever length the peer declares, so this reads the
    5-byte gRPC prefix itself, from grpclib's HTTP/2 stream (pinned to grpclib 0.4).
    """
    http2_stream = stream._stream
    prefix = await http2_stream.recv_data(5)
    if not prefix:
        return None
    if len(prefix) != 5:
        raise WireError("the request ended inside a message's 5-byte length prefix.")
    is_compressed, length = _PREFIX.unpack(prefix)
    if is_compressed:
        raise WireError("the request is compressed; send it uncompressed (grpc-encoding identity).")
    if length > limit:
        raise LimitError(
            f"the request message is {length} bytes, over the server's limit of {limit} "
            "bytes (max_request_bytes). Send less per message, or stream it in parts."
        )
    data = await http2_stream.recv_data(length)
    if len(data) != length:
        raise WireError(f"the request ended after {len(data)} of its {length} declared bytes.")
    return data


class _Feed:
    """The client's stream for a sync model: the worker thread asks, the event loop fetches.

    The call owns the fetch, so it can cancel it: a model blocked waiting for the client's
    next message wakes up with StreamEndedError when the call is cancelled.
    """

    def __init__(self, requests: AsyncGenerator[Any]) -> None:
        self._requests = requests
        self._pending: asyncio.Future[Any] | None = None
        self._is_closed = False

    def __iter__(self) -> Iterator[Any]:
        while (item := anyio.from_thread.run(self._next)) is not _DONE:
            yield item

    async def _next(self) -> Any:
        if self._is_closed:
            raise StreamEndedError("the call has ended")
        self._pending = asyncio.ensure_future(anext(self._requests, _DONE))
        try:
            return await self._pending
        except asyncio.CancelledError:
            if self._is_closed:  # our own aclose() cancelled the fetch, not this task
                raise StreamEndedError("the call has ended") from None
            raise
        finally:
            self._pending = None

    async def aclose(self) -> None:
        """Stop fetching and close the client's stream; safe to call twice."""
        if self._is_closed:
            return
        self._is_closed = True
        pending = self._pending
        if pending is not None:
            pending.cancel()
            await asyncio.wait({pending})
        await self._requests.aclose()
