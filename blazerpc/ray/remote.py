"""RemoteModel: the front door's runner of one model, whose calls run in its Ray replicas.

blazerpc's own server stays the front door (gRPC, HTTP, the Open Inference and OpenAI routes,
TLS, keys, limits, deadlines, health); once a call is admitted, this sends it through the
model's Ray Serve deployment handle, and its results back to the caller's transport.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import DeploymentUnavailableError

from blazerpc.context import Context
from blazerpc.errors import ModelError, Status, UnavailableError, WireError
from blazerpc.ray.envelope import RemoteFailure, RemoteRequest
from blazerpc.runtime.batcher import Batcher
from blazerpc.runtime.calls import CallPort, Tally
from blazerpc.schema.spec import ModelSpec

__all__ = ("RemoteModel", "Route")

_GONE = (ActorDiedError, ActorUnavailableError, RayActorError, DeploymentUnavailableError)
"""What Ray raises when the replica serving a call stops, or the deployment is gone."""


class Route:
    """Where a model's calls go: its deployment handle and the streams' inbox, known once the
    model is deployed (the runner is made with the server, before that)."""

    def __init__(self) -> None:
        self.handle: Any = None
        self.streaming: Any = None
        """The handle with `stream=True`: each item comes back as the model yields it."""
        self.inbox: Any = None

    def set(self, handle: Any, inbox: Any) -> None:
        self.handle, self.streaming, self.inbox = handle, handle.options(stream=True), inbox


class RemoteModel:
    """A `ModelRunner` whose calls run in the model's Ray replicas (see the module doc)."""

    batcher: Batcher | None = None  # batching happens in each replica

    def __init__(self, model: ModelSpec, route: Route, *, redacts_errors: bool = False) -> None:
        self.model = model
        self._route = route
        self._redacts = redacts_errors
        self._is_unary_response = not model.shape.is_server_streaming
        self._takes_stream = model.shape.is_client_streaming

    async def run(
        self,
        port: CallPort,
        injected: dict[str, object],
        tally: Tally,
        first: dict[str, Any] | None,
    ) -> None:
        if first is None and not self._takes_stream:
            raise WireError("the call ended before its request message arrived.")
        context = injected.get(self.model.context_parameter or "")
        deadline = port.deadline
        request = RemoteRequest(
            first,
            port.request_id,
            port.peer,
            dict(context.metadata) if isinstance(context, Context) else None,
            None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time()),
        )
        try:
            if not self._takes_stream or first is None:  # an empty stream: nothing to pump
                await self._call(port, request, tally)
                return
            request.inbox, request.stream_id = self._route.inbox, uuid.uuid4().hex
            await _pumping(port, request, self._call(port, request, tally))
        except _GONE as error:
            raise UnavailableError(
                f"model {self.model.name!r}: the replica serving this call stopped before it "
                f"finished ({type(error).__name__}); retry, another replica will serve it."
            ) from None

    async def _call(self, port: CallPort, request: RemoteRequest, tally: Tally) -> None:
        if self._is_unary_response:
            response = self._route.handle.unary.remote(request)
            try:
                result = await response
            except asyncio.CancelledError:
                response.cancel()  # the replica's task is cancelled, its generator closed
                raise
            await port.send(self._unwrapped(result))
            return
        items = self._route.streaming.stream.remote(request)
        try:
            async for item in items:
                await port.send(self._unwrapped(item))
                tally.item_sent()
        except BaseException:
            items.cancel()  # a caller gone, a failed send: the model stops at once
            raise

    def _unwrapped(self, result: Any) -> Any:
        """A result, or the failure it stands for raised with its status and message."""
        if type(result) is RemoteFailure:
            message = result.redacted if self._redacts else result.message
            raise ModelError(Status(result.status), message)
        return result


async def _pumping(port: CallPort, request: RemoteRequest, call: Any) -> None:
    """Run `call` while the client's next messages go to the stream's inbox, in order.

    A message that fails to arrive (malformed, too large, stalled) fails the call with that
    error, as it would in one process; the inbox forgets the stream when the call ends.
    """
    inbox, stream_id = request.inbox, request.stream_id
    main = asyncio.current_task()
    assert main is not None
    pump: asyncio.Task[None] | None = None
    try:
        await inbox.open.remote(stream_id)
        pump = asyncio.ensure_future(_pump(port.receive, inbox, stream_id))
        pump.add_done_callback(lambda task: _cancel_on_failure(task, main))
        await call
    except asyncio.CancelledError:
        failure = _failed(pump) if pump is not None else None
        if failure is not None and main.uncancel() == 0:
            raise failure from None
        raise
    finally:
        if pump is not None:
            pump.cancel()
        else:
            call.close()  # never awaited
        inbox.discard.remote(stream_id)  # no need to wait: nothing else uses the id


async def _pump(receive: Callable[[], Any], inbox: Any, stream_id: str) -> None:
    index = 0
    while (fields := await receive()) is not None:
        if not await inbox.put.remote(stream_id, index, fields):
            return  # the call is over
        index += 1
    await inbox.put.remote(stream_id, index, None)


def _failed(task: asyncio.Task[None]) -> BaseException | None:
    return None if not task.done() or task.cancelled() else task.exception()


def _cancel_on_failure(pump: asyncio.Task[None], main: asyncio.Task[Any]) -> None:
    if _failed(pump) is not None:
        main.cancel()
