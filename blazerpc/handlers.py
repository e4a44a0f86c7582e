"""One adapter per shape: a user's function -> a grpclib handler, behind one error boundary.

- Sync functions and sync generators run in worker threads (anyio), one item at a time, so a
  slow model never blocks the event loop.
- A generator is closed as soon as its caller cancels, disconnects or passes its deadline: its
  `finally` runs at once and it produces at most one more item.
- Nothing is buffered between a generator and its stream: one awaited send per item, so a
  slow reader slows the producer.
- After each streamed item the handler yields to the event loop once, so a generator that
  never awaits cannot starve the other streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from grpclib.const import Handler
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from blazerpc.codec import CARDINALITIES, MessageCodec, ModelCodec, SchemaCodec
from blazerpc.context import Context
from blazerpc.errors import ResultError, WireError, to_status
from blazerpc.schema import RESULT_FIELD, ModelSpec, ServiceSpec, Shape

__all__ = ("ServiceHandlers",)

_DONE = object()
_TURN_S = 0.0005
"""How long a stream may keep the event loop before letting the others run (see bench/)."""
T = TypeVar("T")

RawStream = Stream[bytes, bytes]
Adapter = Callable[[RawStream], Awaitable[None]]


class ServiceHandlers:
    """grpclib's handler mapping for one schema: `/package.Service/PredictX` -> adapter."""

    def __init__(self, schema: ServiceSpec, codecs: SchemaCodec) -> None:
        self._mapping = {
            f"/{schema.full_name}/{model.rpc_name}": Handler(
                _adapter(model, codecs.models[model.name]),
                CARDINALITIES[model.shape],
                bytes,
                bytes,
            )
            for model in schema.models
        }

    def __mapping__(self) -> dict[str, Handler]:
        return self._mapping


def _adapter(model: ModelSpec, codec: ModelCodec) -> Adapter:
    call = _Call(model, codec)
    body = {
        Shape.UNARY: call.unary,
        Shape.SERVER_STREAMING: call.server_streaming,
        Shape.CLIENT_STREAMING: call.client_streaming,
        Shape.BIDIRECTIONAL: call.server_streaming,
    }[model.shape]

    async def handle(stream: RawStream) -> None:
        context = _context(stream) if model.context_parameter else None
        injected: dict[str, object] = {}
        if model.context_parameter is not None:
            injected[model.context_parameter] = context
        try:
            await body(stream, injected)
        except asyncio.CancelledError:
            if context is not None:
                context.cancel()
            raise
        except Exception as error:  # the one boundary: every failure becomes a status
            status, message = to_status(error, model.name)
            raise GRPCError(status, message) from None

    return handle


class _Call:
    """Runs one model for one rpc: decode, call (in a thread if sync), encode, send."""

    def __init__(self, model: ModelSpec, codec: ModelCodec) -> None:
        self._model = model
        self._function: Callable[..., Any] = model.function
        self._request = codec.request
        self._response = codec.response
        self._streamed = model.streamed_parameter

    async def unary(self, stream: RawStream, injected: dict[str, object]) -> None:
        kwargs = self._request.decode(await _receive_one(stream)) | injected
        if self._model.is_async:
            result = await self._function(**kwargs)
        else:
            result = await anyio.to_thread.run_sync(functools.partial(self._function, **kwargs))
        await stream.send_message(self._encode(result))

    async def client_streaming(self, stream: RawStream, injected: dict[str, object]) -> None:
        items = _items(stream, self._request, self._streamed or "")
        try:
            if self._model.is_async:
                result = await self._function(items, **injected)
            else:
                call = functools.partial(self._function, _blocking(items), **injected)
                result = await anyio.to_thread.run_sync(call)
        finally:
            await items.aclose()
        await stream.send_message(self._encode(result))

    async def server_streaming(self, stream: RawStream, injected: dict[str, object]) -> None:
        """Server and bidirectional streaming: the generator's items, one message each."""
        if self._streamed is None:
            arguments = self._request.decode(await _receive_one(stream)) | injected
            requests = None
        else:
            requests = _items(stream, self._request, self._streamed)
            feed = requests if self._model.is_async else _blocking(requests)
            arguments = {self._streamed: feed} | injected
        try:
            if self._model.is_async:
                await self._stream_async(stream, self._function(**arguments))
            else:
                await self._stream_sync(stream, self._function(**arguments))
        finally:
            if requests is not None:
                await requests.aclose()

    async def _stream_async(self, stream: RawStream, items: Any) -> None:
        clock = asyncio.get_running_loop().time
        turn_ends = clock() + _TURN_S
        try:
            async for item in items:
                await stream.send_message(self._encode(item))
                if clock() >= turn_ends:  # fairness: a stream holds the loop for one turn at most
                    await asyncio.sleep(0)
                    turn_ends = clock() + _TURN_S
        finally:
            await items.aclose()

    async def _stream_sync(self, stream: RawStream, items: Iterator[Any]) -> None:
        try:
            while (item := await _in_thread(next, items, _DONE)) is not _DONE:
                await stream.send_message(self._encode(item))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                await _in_thread(close)

    def _encode(self, result: object) -> bytes:
        try:
            return self._response.encode({RESULT_FIELD: result})
        except WireError as err:
            raise ResultError(str(err)) from None


def _context(stream: RawStream) -> Context:
    """The Context a model asked for, read off grpclib's stream."""
    remaining = stream.deadline.time_remaining() if stream.deadline is not None else None
    address = stream.peer.addr() if stream.peer is not None else None
    return Context(
        {key: value for key, value in (stream.metadata or {}).items() if isinstance(value, str)},
        deadline=None if remaining is None else time.monotonic() + remaining,
        peer=f"{address[0]}:{address[1]}" if address else None,
    )


async def _in_thread(function: Callable[..., T], *args: object) -> T:
    """Run `function` in a worker thread; if the call is cancelled, first let the thread finish.

    The generator it steps is then idle again, so it can be closed at once (a generator
    cannot be closed while another thread is inside it).
    """
    work = asyncio.ensure_future(anyio.to_thread.run_sync(function, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():  # a deadline and a reset may both cancel us: wait out both
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({work})
        raise


async def _receive_one(stream: RawStream) -> bytes:
    data = await stream.recv_message()
    if data is None:
        raise WireError("the call ended before its request message arrived.")
    return data


async def _items(stream: RawStream, request: MessageCodec, field: str) -> AsyncGenerator[Any]:
    """The client's stream, decoded lazily: item 1 is handed over before item 2 arrives."""
    while (data := await stream.recv_message()) is not None:
        yield request.decode(data)[field]


def _blocking(items: AsyncIterator[Any]) -> Iterator[Any]:
    """The client's stream for a sync model in a worker thread: each item fetched on the loop."""
    while (item := anyio.from_thread.run(_next, items)) is not _DONE:
        yield item


async def _next(items: AsyncIterator[Any]) -> Any:
    return await anext(items, _DONE)
