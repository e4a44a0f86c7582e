"""Running one model for one call, whatever the transport: gRPC and HTTP drive the same code.

A transport hands the call a `CallPort` (decoded requests in, results out); `ModelCall` does
the rest.

- Sync functions and sync generators run in worker threads (anyio), one item at a time, so a
  slow model never blocks the event loop.
- A generator is closed as soon as its caller cancels, disconnects or passes its deadline: its
  `finally` runs at once and it produces at most one more item.
- Nothing is buffered between a generator and its caller: one awaited send per item, so a
  slow reader slows the producer.
- A stream keeps the event loop for one turn (`_TURN_S`) at most, so a generator that never
  awaits cannot starve the other streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any, Protocol, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from grpclib.const import Status

from blazerpc.context import Context
from blazerpc.errors import StreamEndedError, WireError
from blazerpc.runtime.batcher import Batcher
from blazerpc.runtime.continuous import ContinuousBatcher
from blazerpc.runtime.metrics import StreamTimer
from blazerpc.schema.spec import ModelSpec, Shape

__all__ = ("CallPort", "ModelCall", "ModelRunner", "Tally")

_DONE = object()
Fields = dict[str, Any] | None
"""A request's fields, or None: the caller sent no (more) requests."""
_TURN_S = 0.0005
"""How long a stream may keep the event loop before letting the others run (see bench/)."""
T = TypeVar("T")


class CallPort(Protocol):
    """One call as its transport sees it: decoded requests in, results out, and who called."""

    transport: str
    """`grpc` or `http`, for the access log."""

    request_id: str
    """The call's id (`x-request-id`): the caller's, or one the transport made."""

    @property
    def peer(self) -> str | None:
        """The caller's `host:port`, when known."""
        ...

    @property
    def deadline(self) -> float | None:
        """The caller's deadline on the event loop's clock, if it set one."""
        ...

    def context(self) -> Context:
        """The Context a model that asks for one receives."""
        ...

    def cancelled_status(self) -> Status:
        """Why the call's task was cancelled: its deadline passed, or the caller left."""
        ...

    async def receive(self) -> dict[str, Any] | None:
        """The next request message's fields, or None once the caller has sent them all."""
        ...

    async def send(self, result: object) -> None:
        """Send one result (or one streamed item)."""
        ...


class Tally:
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


def default_bound(model: ModelSpec) -> int | None:
    """The bound of a model that sets no max_concurrent: one call per CPU for a sync unary
    model, none otherwise.

    Threads running Python fight over the GIL: a scikit-learn RandomForest served with no bound
    did 175 rps (p99 292 ms) at concurrency 32 on 2 cores, and 213 rps (p99 228 ms) bounded to
    2 (bench/concurrency.py). A streaming call holds its turn for as long as its stream lasts,
    so bounding streams by default would let slow or idle clients hold everyone else back.
    """
    if model.is_async or model.batching is not None or model.shape is not Shape.UNARY:
        return None
    return os.cpu_count() or 1


Body = Callable[["CallPort", dict[str, object], "Tally", "dict[str, Any] | None"], Awaitable[None]]


class ModelRunner(Protocol):
    """What runs a model's calls behind the boundary: `ModelCall` in this process, or a
    stand-in that sends them elsewhere (blazerpc.ray runs them in Ray replicas)."""

    @property
    def model(self) -> ModelSpec:
        """The model it runs."""
        ...

    @property
    def batcher(self) -> Batcher | None:
        """The model's batcher, when it batches in this process."""
        ...

    def run(
        self, port: CallPort, injected: dict[str, object], tally: Tally, first: Fields
    ) -> Awaitable[None]:
        """Run one call: `first` is its first request, already received (None: none came)."""
        ...


class ModelCall:
    """Runs one model for one call: read its requests, call it (in a thread if sync), send."""

    def __init__(
        self,
        model: ModelSpec,
        batcher: Batcher | None,
        continuous: ContinuousBatcher | None = None,
    ) -> None:
        self.model = model
        self.batcher = batcher
        self._function: Callable[..., Any] = model.function
        self._continuous = continuous
        self._streamed = model.streamed_parameter
        self._body: Body = {
            Shape.UNARY: self.unary,
            Shape.SERVER_STREAMING: self.server_streaming,
            Shape.CLIENT_STREAMING: self.client_streaming,
            Shape.BIDIRECTIONAL: self.server_streaming,
        }[model.shape]
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        self.bound = model.max_concurrent or default_bound(model)
        """How many calls run at once (None: no bound)."""
        self.run: Body = self._body if self.bound is None else self._bounded
        """The body for the model's shape: `run(port, injected_arguments, tally, first)`;
        `first` is the call's first request, already received (None: the caller sent none).
        With `max_concurrent`, a call waits for a slot first and holds it to its end."""

    async def _bounded(
        self, port: CallPort, injected: dict[str, object], tally: Tally, first: Fields
    ) -> None:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:  # a server started anew
            self._slots, self._slots_loop = asyncio.Semaphore(self.bound or 1), loop
        async with self._slots:
            await self._body(port, injected, tally, first)

    async def unary(
        self, port: CallPort, injected: dict[str, object], tally: Tally, first: Fields
    ) -> None:
        """One request in, one response out."""
        kwargs = _required(first)
        if injected:
            kwargs |= injected  # the codec's dict is this call's own
        if self.batcher is not None:
            result = await self.batcher.submit(kwargs, port.deadline)
        elif self.model.is_async:
            result = await self._function(**kwargs)
        else:
            result = await anyio.to_thread.run_sync(functools.partial(self._function, **kwargs))
        await port.send(result)

    async def client_streaming(
        self, port: CallPort, injected: dict[str, object], tally: Tally, first: Fields
    ) -> None:
        """The client's stream in, one response out."""
        requests = _items(port, self._streamed or "", first)
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
        self, port: CallPort, injected: dict[str, object], tally: Tally, first: Fields
    ) -> None:
        """Server and bidirectional streaming: the generator's items, one message each."""
        if self._continuous is not None:
            await _stream_async(port, self._continuous.stream(_required(first)), tally)
            return
        if self._streamed is None:
            arguments = _required(first) | injected
            if self.model.is_async:
                await _stream_async(port, self._function(**arguments), tally)
            else:
                await _stream_sync(port, self._function(**arguments), tally, _no_feed)
            return
        requests = _items(port, self._streamed, first)
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


async def _stream_async(port: CallPort, items: Any, tally: Tally) -> None:
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
    tally: Tally,
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


def _required(first: Fields) -> dict[str, Any]:
    if first is None:
        raise WireError("the call ended before its request message arrived.")
    return first


async def _items(port: CallPort, field: str, first: Fields) -> AsyncGenerator[Any]:
    """The client's stream, decoded lazily: item 1 is handed over before item 2 arrives."""
    fields = first
    while fields is not None:
        yield fields[field]
        fields = await port.receive()


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
