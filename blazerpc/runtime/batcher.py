"""Adaptive batching: concurrent unary calls to one model grouped into one batch function call.

A lone call on an idle model runs at once; while a batch runs, new calls queue and form the
next batch (up to `max_size`), so batches grow with load and never add delay to a quiet model.
A call waits for company at most `max_wait_s` from its arrival, and only when that is not 0.
Cancelled and expired calls are dropped before their batch runs: the function never sees them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from blazerpc.errors import DeadlineExceededError, QueueFullError, ResultError
from blazerpc.schema.markers import Batching
from blazerpc.schema.spec import ModelSpec

__all__ = ("BatchStats", "Batcher")

_DUE_S = 1e-6
"""A wait shorter than this is due now. Float sums of clock readings leave waits of 1e-18 s
that no clock can time: waiting on them only spins the loop (a test's virtual clock, which
cannot move by less than a float's step, would spin forever)."""


@dataclass(slots=True)
class BatchStats:
    """What a batcher has done, as BlazeServer.batch_stats shows it."""

    batches: int = 0
    items: int = 0
    queue_depth: int = 0
    sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    """Batch size -> how many batches had it."""
    queue_time_s: float = 0.0
    """Total time calls spent queued, from arrival to the start of their batch."""
    max_queue_time_s: float = 0.0


@dataclass(slots=True, eq=False)
class _Entry:
    fields: Mapping[str, Any]
    future: asyncio.Future[Any]
    arrived: float
    deadline: float | None

    def is_dead(self, now: float) -> bool:
        return self.future.done() or (self.deadline is not None and now >= self.deadline)


class Batcher:
    """Groups one model's concurrent calls; `await submit(fields)` returns this call's result."""

    def __init__(
        self,
        model: ModelSpec,
        config: Batching,
        on_batch: Callable[[str, int, list[float]], None] | None = None,
    ) -> None:
        self._model = model
        self._on_batch = on_batch
        self._config = config
        self._function: Callable[..., Any] = model.function
        self._names = [f.name for f in model.request.fields]
        self._queue: collections.deque[_Entry] = collections.deque()
        self._changed: asyncio.Event | None = None
        self._running = 0
        self._dispatcher: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self.stats = BatchStats()

    async def submit(self, fields: Mapping[str, Any], deadline: float | None = None) -> Any:
        """Queue one call's decoded fields; its own result, or its own exception.

        `deadline` is on the event loop's clock; a call past it is dropped, never computed.
        """
        if len(self._queue) >= self._config.max_queue:
            raise QueueFullError(
                f"model {self._model.name!r} has {len(self._queue)} calls queued, its limit "
                "(Batching.max_queue). Retry with backoff, or raise the limit."
            )
        loop = asyncio.get_running_loop()
        entry = _Entry(fields, loop.create_future(), loop.time(), deadline)
        self._queue.append(entry)
        self.stats.queue_depth = len(self._queue)
        if self._is_free_now():
            self._start_batch(entry.arrived)  # a lone call on an idle model: no dispatcher hop
        else:
            self._wake()
        try:
            return await entry.future
        finally:
            entry.future.cancel()  # no-op once done; marks an abandoned call as dead

    async def close(self) -> None:
        """Stop dispatching and wait for the running batches.

        A call submitted later starts dispatching afresh, on whatever loop it runs on: an ASGI
        app's lifespan may run more than once, each time on a new loop.
        """
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.wait({self._dispatcher})
        if self._batches:
            await asyncio.wait(self._batches)
        self._dispatcher, self._changed = None, None

    def _is_free_now(self) -> bool:
        return (
            self._config.max_wait_s == 0
            and len(self._queue) == 1
            and self._running < self._config.max_concurrent
        )

    def _wake(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        self._changed.set()
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.ensure_future(self._dispatch(self._changed))

    async def _dispatch(self, changed: asyncio.Event) -> None:
        """Start a batch whenever the model is free and the batch is full or has waited enough."""
        loop = asyncio.get_running_loop()
        while True:
            changed.clear()
            self._drop_dead(loop.time())
            if self._queue and self._running < self._config.max_concurrent:
                wait_s = self._queue[0].arrived + self._config.max_wait_s - loop.time()
                if len(self._queue) >= self._config.max_size or wait_s <= _DUE_S:
                    self._start_batch(loop.time())
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait_s)
                continue
            await changed.wait()

    def _drop_dead(self, now: float) -> None:
        if not any(entry.is_dead(now) for entry in self._queue):
            return
        alive: collections.deque[_Entry] = collections.deque()
        for entry in self._queue:
            if not entry.is_dead(now):
                alive.append(entry)
                continue
            if not entry.future.done():
                entry.future.set_exception(
                    DeadlineExceededError(
                        f"the deadline passed while the call waited for model "
                        f"{self._model.name!r}; it was not computed"
                    )
                )
        self._queue = alive
        self.stats.queue_depth = len(self._queue)

    def _start_batch(self, now: float) -> None:
        size = min(len(self._queue), self._config.max_size)
        batch = [self._queue.popleft() for _ in range(size)]
        self.stats.queue_depth = len(self._queue)
        waits = [now - entry.arrived for entry in batch]
        self.stats.queue_time_s += sum(waits)
        self.stats.max_queue_time_s = max(self.stats.max_queue_time_s, *waits)
        if self._on_batch is not None:
            self._on_batch(self._model.name, size, waits)
        self._running += 1
        task = asyncio.ensure_future(self._run(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run(self, batch: list[_Entry]) -> None:
        try:
            results = await self._call(batch)
        except Exception as error:  # the batch's failure is each of its callers' failure
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)
        else:
            for entry, result in zip(batch, results, strict=True):
                if entry.future.done():
                    continue
                if isinstance(result, BaseException):
                    entry.future.set_exception(result)
                else:
                    entry.future.set_result(result)
        finally:
            self.stats.batches += 1
            self.stats.items += len(batch)
            self.stats.sizes[len(batch)] += 1
            self._running -= 1
            if self._changed is not None:
                self._changed.set()

    async def _call(self, batch: list[_Entry]) -> list[Any]:
        columns = {name: [entry.fields[name] for entry in batch] for name in self._names}
        if self._model.is_async:
            results = await self._function(**columns)
        else:
            results = await anyio.to_thread.run_sync(functools.partial(self._function, **columns))
        if not isinstance(results, list | tuple) or len(results) != len(batch):
            count = len(results) if isinstance(results, list | tuple) else type(results).__name__
            raise ResultError(
                f"the batch function returned {count} results for {len(batch)} calls; "
                "it must return one result per call, in order"
            )
        return list(results)
