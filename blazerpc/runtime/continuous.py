"""Continuous batching: streams join and leave a running batch at every step.

The model's function is a *step*: called with lists over the streams active in this step
(and their `Step` slots), it returns one entry per stream: a value (sent to that stream),
`Stop` (the stream ends), `Stop(value)` (a last value, then the end), or an exception object
(that stream alone fails). Rules, each tested:

- one call per step; at most `max_size` streams are resident, paused ones included (they
  keep their state, as a KV-cache slot would); new streams join only between steps, in
  arrival order; a lone stream on an idle model starts at once;
- a stream whose caller left (cancel, disconnect, deadline) is gone before the next step;
  `release` runs exactly once for every stream that leaves, however it leaves, after the
  last step that included it returned, never during a step;
- a slow reader never stalls the others: each stream has a small buffer, and a stream whose
  buffer is full sits out steps, its state kept;
- a step that raises fails every stream in it; the batcher goes on serving.

Metrics of steps and the benchmark are still to come (issue 22).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from blazerpc.errors import QueueFullError, ResultError
from blazerpc.schema.markers import Continuous, Skip, Step, Stop
from blazerpc.schema.spec import ModelSpec

__all__ = ("ContinuousBatcher",)

log = logging.getLogger(__name__)

BUFFER = 4
"""Values a stream may have waiting for its reader before it sits out steps."""


_END: Any = object()


@dataclass(slots=True, eq=False)
class _Stream:
    fields: Mapping[str, Any]
    step: Step = field(default_factory=Step)
    values: collections.deque[Any] = field(default_factory=collections.deque)
    readable: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: float = field(default_factory=time.perf_counter)
    is_done: bool = False
    """The model ended it (Stop, an exception, a failed step)."""
    is_gone: bool = False
    """Its caller left."""
    is_released: bool = False


class ContinuousBatcher:
    """Runs one model's step function over its active streams; `stream(fields)` is one call."""

    @classmethod
    def of(
        cls, model: ModelSpec, on_step: Callable[[str, int, float, list[float]], None] | None
    ) -> ContinuousBatcher | None:
        """The scheduler of a model with batch=Continuous(...); None for any other model."""
        config = model.batching
        if not isinstance(config, Continuous) or model.step_parameter is None:
            return None
        return cls(
            model.function,
            [field.name for field in model.request.fields],
            model.step_parameter,
            is_async=model.is_async,
            max_size=config.max_size,
            max_queue=config.max_queue,
            release=config.release,
            on_step=functools.partial(on_step, model.name) if on_step is not None else None,
        )

    def __init__(
        self,
        function: Callable[..., Any],
        names: list[str],
        step_parameter: str,
        *,
        is_async: bool,
        max_size: int = 32,
        max_queue: int = 256,
        release: Callable[[Step], Any] | None = None,
        on_step: Callable[[int, float, list[float]], None] | None = None,
    ) -> None:
        self._function = function
        self._on_step = on_step
        """Metrics: (streams, step duration, each newcomer's wait for its slot)."""
        self._names = names
        self._step_parameter = step_parameter
        self._is_async = is_async
        self._max_size = max_size
        self._max_queue = max_queue
        self._release = release
        self._waiting: collections.deque[_Stream] = collections.deque()
        self._active: list[_Stream] = []
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.steps: list[int] = []
        """The number of streams in each step, in order (for tests and metrics)."""

    async def stream(self, fields: Mapping[str, Any]) -> AsyncGenerator[Any]:
        """Join the batch with this call's fields; its values, in order, until it ends."""
        if len(self._waiting) >= self._max_queue:
            raise QueueFullError(
                f"{len(self._waiting)} streams are waiting for a slot, the model's limit "
                "(Continuous max_queue); retry with backoff."
            )
        entry = _Stream(fields)
        self._waiting.append(entry)
        self._poke()
        try:
            while True:
                while not entry.values:
                    entry.readable.clear()
                    await entry.readable.wait()
                value = entry.values.popleft()
                self._poke()  # room in the buffer: the stream may step again
                if value is _END:
                    return
                if isinstance(value, BaseException):
                    raise value
                yield value
        finally:
            entry.is_gone = True
            self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()
        if self._loop_task is None or self._loop_task.done():
            self._wake = asyncio.Event()
            self._loop_task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        """Step while any stream is resident or waiting."""
        wake = self._wake
        assert wake is not None
        while True:
            self._leave()
            while self._waiting and len(self._active) < self._max_size:
                entry = self._waiting.popleft()
                if entry.is_gone:
                    continue
                self._active.append(entry)
            if not self._active and not self._waiting:
                return
            ready = [s for s in self._active if not s.is_done and len(s.values) < BUFFER]
            if not ready:
                wake.clear()
                await wake.wait()
                continue
            await self._step(ready)

    async def _step(self, streams: list[_Stream]) -> None:
        arguments: dict[str, Any] = {
            name: [s.fields[name] for s in streams] for name in self._names
        }
        arguments[self._step_parameter] = [s.step for s in streams]
        self.steps.append(len(streams))
        started = time.perf_counter()
        waits = [started - s.arrived for s in streams if s.step.is_first]
        try:
            if self._is_async:
                results = await self._function(**arguments)
            else:
                call = functools.partial(self._function, **arguments)
                results = await anyio.to_thread.run_sync(call)
            if not isinstance(results, list) or len(results) != len(streams):
                got = len(results) if isinstance(results, list) else type(results).__name__
                raise ResultError(
                    f"a step of {len(streams)} streams returned {got} entries; return one "
                    "entry per stream, in order."
                )
        except Exception as error:  # the whole step failed: every stream in it
            for stream in streams:
                self._end(stream, error)
            return
        finally:
            if self._on_step is not None:
                self._on_step(len(streams), time.perf_counter() - started, waits)
        for stream, result in zip(streams, results, strict=True):
            stream.step.is_first = False
            if isinstance(result, Stop) or result is Stop:
                if isinstance(result, Stop) and result.has_value:
                    self._put(stream, result.value)
                self._end(stream, _END)
            elif isinstance(result, BaseException):
                self._end(stream, result)
            elif result is Skip or isinstance(result, Skip):
                continue  # nothing for this stream this step
            else:
                self._put(stream, result)

    def _put(self, stream: _Stream, value: Any) -> None:
        stream.step.index += 1
        stream.values.append(value)
        stream.readable.set()

    def _end(self, stream: _Stream, last: Any) -> None:
        stream.is_done = True
        stream.values.append(last)
        stream.readable.set()

    def _leave(self) -> None:
        """Streams that ended or whose caller left leave, between steps; release once each."""
        staying = []
        for stream in self._active:
            if stream.is_gone or stream.is_done:  # last values may still wait for the reader
                self._released(stream)
            else:
                staying.append(stream)
        self._active = staying

    def _released(self, stream: _Stream) -> None:
        if stream.is_released:
            return
        stream.is_released = True
        if self._release is not None:
            try:
                self._release(stream.step)
            except Exception:  # the model's cleanup failed: the others go on
                log.exception("release of a stream failed")
