"""ModelReplica: one copy of one model, inside a Ray Serve replica.

It imports the app, runs the app's lifespan hooks once (before its first call; released when
Ray stops the replica), and runs each call with the same `ModelCall` as `blaze serve`: batching,
continuous batching, worker threads for sync models, `max_concurrent`. Calls arrive from the
front door as `RemoteRequest`s; a client stream's later messages come from its `StreamInbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from blazerpc.context import Context
from blazerpc.errors import Status, TargetError, cancelled_status, to_status_both_ways
from blazerpc.ray.envelope import RemoteFailure, RemoteRequest
from blazerpc.runtime.boundary import local_runner
from blazerpc.runtime.calls import Tally
from blazerpc.runtime.lifespan import run_hooks
from blazerpc.target import load_app

__all__ = ("ModelReplica", "current_model")

_END = object()
_serving: str | None = None


def current_model() -> str | None:
    """The model this process serves as a Ray replica; None outside one.

    Every replica runs the app's lifespan hooks; in an app of several models, a hook can load
    only what this replica's model needs.
    """
    return _serving


class ModelReplica:
    """The Ray Serve deployment class of one model (blazerpc.ray.RayDeployment binds it)."""

    async def __init__(  # type: ignore[misc]  # Ray Serve awaits an async constructor
        self,
        target: str,
        model: str,
        *,
        paths: tuple[str, ...] = (),
    ) -> None:
        global _serving
        for path in reversed(paths):  # where the front door imported the app from
            if path not in sys.path:
                sys.path.insert(0, path)
        app = load_app(target)
        try:
            spec = app.schema.model(model)
        except KeyError:
            served = ", ".join(m.name for m in app.schema.models)
            raise TargetError(f"{target} has no model {model!r}; it serves: {served}.") from None
        _serving = model
        self._model = spec
        self._call = local_runner(spec, None)
        self._lifespan = contextlib.AsyncExitStack()
        await self._lifespan.enter_async_context(run_hooks(app.lifespan_hooks))

    async def __del__(self) -> None:
        """Ray Serve stops the replica (its calls are over): release what the hooks loaded."""
        if self._call.batcher is not None:
            await self._call.batcher.close()
        await self._lifespan.aclose()

    async def unary(self, request: RemoteRequest) -> Any:
        """A call with one response (unary or client streaming): the result, or how it failed."""
        port = _ReplicaPort(request)
        try:
            await self._call.run(port, self._injected(port), Tally(), request.fields)
        except asyncio.CancelledError:
            port.cancel()
            raise
        except Exception as error:
            return self._failure(error, request)
        return port.result

    async def stream(self, request: RemoteRequest) -> AsyncIterator[Any]:
        """A streaming call: its items as the model yields them, then a failure if it failed.

        The model runs in its own task, one item ahead at most; when the front door cancels
        the call (its caller left or passed the deadline), the task is cancelled and the
        model's generator closed."""
        port = _ReplicaPort(request, outbox=asyncio.Queue(maxsize=1))
        run = asyncio.ensure_future(self._stream_into(port))
        outbox = port.outbox
        assert outbox is not None
        try:
            while (item := await outbox.get()) is not _END:
                yield item
        finally:
            if not run.done():
                port.cancel()
                run.cancel()
            await asyncio.wait({run})

    async def _stream_into(self, port: _ReplicaPort) -> None:
        outbox = port.outbox
        assert outbox is not None
        try:
            await self._call.run(port, self._injected(port), Tally(), port.request.fields)
        except Exception as error:
            await outbox.put(self._failure(error, port.request))
        await outbox.put(_END)

    def _injected(self, port: _ReplicaPort) -> dict[str, object]:
        parameter = self._model.context_parameter
        return {} if parameter is None else {parameter: port.context()}

    def _failure(self, error: Exception, request: RemoteRequest) -> RemoteFailure:
        """Worded (and logged) here, where the traceback is: the caller gets what `blaze
        serve` would say."""
        status, message, redacted = to_status_both_ways(
            error, self._model.name, request_id=request.request_id
        )
        return RemoteFailure(status.value, message, redacted)


class _ReplicaPort:
    """The CallPort of a call run in a replica: requests from the envelope and the inbox,
    results to the caller (one result, or the stream's outbox)."""

    transport = "ray"

    def __init__(self, request: RemoteRequest, outbox: asyncio.Queue[Any] | None = None) -> None:
        self.request = request
        self.request_id = request.request_id
        self.outbox = outbox
        self.result: Any = None
        self._context: Context | None = None
        self._taken = 0
        """Messages taken from the inbox; -1 once the client's last was."""
        timeout = request.timeout
        self.deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        self._monotonic_deadline = None if timeout is None else time.monotonic() + timeout

    @property
    def peer(self) -> str | None:
        return self.request.peer

    def context(self) -> Context:
        if self._context is None:
            self._context = Context(
                self.request.metadata,
                deadline=self._monotonic_deadline,
                peer=self.request.peer,
                request_id=self.request_id,
            )
        return self._context

    def cancel(self) -> None:
        """The call was cancelled: a sync model checking `ctx.is_cancelled` stops."""
        if self._context is not None:
            self._context.cancel()

    def cancelled_status(self) -> Status:
        deadline = self._monotonic_deadline
        return cancelled_status(
            is_past_deadline=deadline is not None and time.monotonic() >= deadline
        )

    async def receive(self) -> dict[str, Any] | None:
        inbox = self.request.inbox
        if inbox is None or self._taken < 0:
            return None
        fields: dict[str, Any] | None = await inbox.take.remote(self.request.stream_id, self._taken)
        self._taken = -1 if fields is None else self._taken + 1
        return fields

    async def send(self, result: object) -> None:
        if self.outbox is None:
            self.result = result
        else:
            await self.outbox.put(result)
