"""BlazeClient: call an app's models from Python, with the app's own types.

Calls name a model by its name (`await client.predict("add", a=1, b=2)`, untyped) or by the
decorated function itself (`await client.predict(add, a=1, b=2)`), which mypy checks against
the function's signature and types the result of. Failures raise RpcError; nothing from
grpclib or h2 leaks out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

import h2.exceptions
from grpclib.client import Channel
from grpclib.client import Stream as ClientStream
from grpclib.exceptions import GRPCError, StreamTerminatedError

from blazerpc.app import BlazeApp, Registry
from blazerpc.codec import CARDINALITIES, ModelCodec, RawBytesCodec, SchemaCodec
from blazerpc.errors import RpcError, Status, WireError
from blazerpc.schema import RESULT_FIELD, ModelSpec, Shape

__all__ = ("BlazeClient",)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
ModelRef = str | Callable[..., object]


class BlazeClient:
    """An async gRPC client for one app: `async with BlazeClient(port=50051, app=app) as client`.

    `timeout` is the default deadline of every call, in seconds (None: no deadline).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 50051,
        *,
        registry: Registry | None = None,
        app: BlazeApp | None = None,
        timeout: float | None = None,
    ) -> None:
        if registry is None and app is not None:
            registry = app.registry
        if registry is None:
            raise TypeError(
                "BlazeClient needs the app's schema: pass registry=app.registry or app=app."
            )
        self._schema = registry.schema
        self._codecs = SchemaCodec(self._schema)
        self._channel = Channel(host, port, codec=RawBytesCodec())
        self._owns_channel = True
        self.timeout = timeout

    def with_timeout(self, timeout: float | None) -> BlazeClient:
        """The same connection with another default deadline, for typed calls that need one."""
        view = object.__new__(BlazeClient)
        view.__dict__.update(self.__dict__)
        view._owns_channel = False
        view.timeout = timeout
        return view

    async def __aenter__(self) -> BlazeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a view from with_timeout() leaves it to its parent)."""
        if self._owns_channel:
            self._channel.close()

    @overload
    async def predict(
        self, model: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...
    @overload
    async def predict(self, model: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    async def predict(
        self, model: str, /, *, timeout: float | None = ..., **fields: Any
    ) -> Any: ...
    async def predict(self, model: ModelRef, /, *args: Any, **fields: Any) -> Any:
        """Call a unary model and return its result."""
        spec, codec, timeout = self._prepare(model, Shape.UNARY, args, fields)
        payload = codec.request.encode(fields)
        async with self._call(spec, timeout) as stream:
            await stream.send_message(payload, end=True)
            return _result(codec, await stream.recv_message())

    @overload
    def stream(
        self, model: Callable[P, AsyncIterator[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[T, None]: ...
    @overload
    def stream(
        self, model: Callable[P, Iterator[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[T, None]: ...
    @overload
    def stream(
        self, model: str, /, *, timeout: float | None = ..., **fields: Any
    ) -> AsyncGenerator[Any, None]: ...
    def stream(self, model: ModelRef, /, *args: Any, **fields: Any) -> AsyncGenerator[Any, None]:
        """Call a server-streaming model; iterate its items as they arrive.

        Leaving the loop early cancels the call, which closes the model's generator.
        """
        spec, codec, timeout = self._prepare(model, Shape.SERVER_STREAMING, args, fields)
        return self._stream(spec, codec, codec.request.encode(fields), timeout)

    @overload
    async def send_stream(
        self,
        model: Callable[[AsyncIterator[T]], Coroutine[Any, Any, R]],
        items: Iterable[T] | AsyncIterable[T],
        *,
        timeout: float | None = ...,
    ) -> R: ...
    @overload
    async def send_stream(
        self,
        model: Callable[[Iterator[T]], R],
        items: Iterable[T] | AsyncIterable[T],
        *,
        timeout: float | None = ...,
    ) -> R: ...
    @overload
    async def send_stream(
        self,
        model: str,
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        timeout: float | None = ...,
    ) -> Any: ...
    async def send_stream(
        self,
        model: ModelRef,
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call a client-streaming model with each of `items`, and return its one result."""
        spec, codec, deadline = self._prepare(model, Shape.CLIENT_STREAMING, (), {}, timeout)
        async with self._call(spec, deadline) as stream:
            async for data in _send_while_receiving(stream, codec, spec, items):
                return _result(codec, data)
            return _result(codec, None)

    @overload
    def exchange(
        self,
        model: Callable[[AsyncIterator[T]], AsyncIterator[R]],
        items: Iterable[T] | AsyncIterable[T],
        *,
        timeout: float | None = ...,
    ) -> AsyncGenerator[R, None]: ...
    @overload
    def exchange(
        self,
        model: Callable[[Iterator[T]], Iterator[R]],
        items: Iterable[T] | AsyncIterable[T],
        *,
        timeout: float | None = ...,
    ) -> AsyncGenerator[R, None]: ...
    @overload
    def exchange(
        self,
        model: str,
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        timeout: float | None = ...,
    ) -> AsyncGenerator[Any, None]: ...
    def exchange(
        self,
        model: ModelRef,
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        timeout: float | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Call a bidirectional model: send `items` while its answers arrive.

        `items` is read lazily, so an async generator can wait for an answer before sending
        its next request (ping-pong).
        """
        spec, codec, deadline = self._prepare(model, Shape.BIDIRECTIONAL, (), {}, timeout)
        return self._exchange(spec, codec, items, deadline)

    async def _stream(
        self, spec: ModelSpec, codec: ModelCodec, payload: bytes, deadline: float | None
    ) -> AsyncGenerator[Any, None]:
        async with self._call(spec, deadline) as stream:
            await stream.send_message(payload, end=True)
            while (data := await stream.recv_message()) is not None:
                yield _result(codec, data)

    async def _exchange(
        self,
        spec: ModelSpec,
        codec: ModelCodec,
        items: Iterable[Any] | AsyncIterable[Any],
        deadline: float | None,
    ) -> AsyncGenerator[Any, None]:
        async with self._call(spec, deadline) as stream:
            async for data in _send_while_receiving(stream, codec, spec, items):
                yield _result(codec, data)

    def _prepare(
        self,
        model: ModelRef,
        shape: Shape,
        args: tuple[Any, ...],
        fields: dict[str, Any],
        timeout: float | None = None,
    ) -> tuple[ModelSpec, ModelCodec, float | None]:
        """The model's spec and codec, and the call's deadline: `timeout`, else the default.

        A model named by string may also carry its `timeout` among the fields.
        """
        spec = self._find(model)
        names = [f.name for f in spec.request.fields]
        if isinstance(model, str) and timeout is None and "timeout" not in names:
            timeout = fields.pop("timeout", None)  # a model's own `timeout` field wins
        deadline = self.timeout if timeout is None else timeout
        if spec.shape is not shape:
            raise TypeError(
                f"model {spec.name!r} is {spec.shape.value.replace('_', ' ')}: call it with "
                f"client.{_METHODS[spec.shape]}(), not {_METHODS[shape]}()."
            )
        if len(args) > len(names):
            raise TypeError(f"model {spec.name!r} takes {len(names)} fields, got {len(args)}.")
        for name, value in zip(names, args, strict=False):
            if name in fields:
                raise TypeError(f"model {spec.name!r} got field {name!r} twice.")
            fields[name] = value
        known = {f.name for f in spec.request.fields}
        unknown = sorted(set(fields) - known) if not shape.is_client_streaming else []
        if unknown:
            raise TypeError(
                f"model {spec.name!r} has no parameter {unknown[0]!r}. "
                f"Its parameters: {', '.join(names) or 'none'}."
            )
        return spec, self._codecs.models[spec.name], deadline

    def _find(self, model: ModelRef) -> ModelSpec:
        for spec in self._schema.models:
            if spec.name == model or spec.function is model:
                return spec
        names = ", ".join(spec.name for spec in self._schema.models)
        raise RpcError(Status.NOT_FOUND, f"model {model!r} is not in this app; it has: {names}.")

    @contextlib.asynccontextmanager
    async def _call(
        self, spec: ModelSpec, deadline: float | None
    ) -> AsyncIterator[ClientStream[bytes, bytes]]:
        path = self._schema.rpc_path(spec)
        try:
            async with self._channel.request(
                path, CARDINALITIES[spec.shape], bytes, bytes, timeout=deadline
            ) as stream:
                yield stream
        except GRPCError as err:
            raise RpcError(err.status, err.message or "") from None
        except TimeoutError:
            raise RpcError(
                Status.DEADLINE_EXCEEDED, f"no answer from model {spec.name!r} within {deadline} s"
            ) from None
        except (
            StreamTerminatedError,
            ConnectionError,
            OSError,
            h2.exceptions.ProtocolError,
        ) as err:
            raise RpcError(Status.UNAVAILABLE, f"connection to the server failed: {err}") from None


_METHODS = {
    Shape.UNARY: "predict",
    Shape.SERVER_STREAMING: "stream",
    Shape.CLIENT_STREAMING: "send_stream",
    Shape.BIDIRECTIONAL: "exchange",
}


def _result(codec: ModelCodec, data: bytes | None) -> Any:
    if data is None:
        raise RpcError(Status.INTERNAL, "the server ended the call without a response")
    try:
        values = codec.response.decode(data)
    except WireError as err:
        raise RpcError(Status.INTERNAL, f"the server's response does not match: {err}") from None
    return values.get(RESULT_FIELD)


async def _send_while_receiving(
    stream: ClientStream[bytes, bytes],
    codec: ModelCodec,
    spec: ModelSpec,
    items: Iterable[Any] | AsyncIterable[Any],
) -> AsyncGenerator[bytes, None]:
    """Send `items` in the background while yielding what the server answers.

    Answers are read while the items are still being produced, so a server's early status (a
    passed deadline, a bad item) ends the call at once; an item that cannot be encoded does too.
    """
    await stream.send_request()  # headers first, so answers can arrive before the items end
    sender = asyncio.ensure_future(_send_all(stream, codec, spec, items))
    receive: asyncio.Future[bytes | None] | None = None
    try:
        while True:
            receive = asyncio.ensure_future(stream.recv_message())
            await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
            if not receive.done() and sender.exception() is not None:
                raise sender.exception()  # type: ignore[misc]  # checked just above
            data = await receive
            if data is None:
                return
            yield data
    finally:
        for task in (receive, sender):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task})
        if not sender.cancelled():
            sender.exception()  # retrieved, so asyncio does not warn about it


async def _send_all(
    stream: ClientStream[bytes, bytes],
    codec: ModelCodec,
    spec: ModelSpec,
    items: Iterable[Any] | AsyncIterable[Any],
) -> None:
    field = spec.streamed_parameter or ""
    if isinstance(items, AsyncIterable):
        async for item in items:
            await stream.send_message(codec.request.encode({field: item}))
    else:
        for item in items:
            await stream.send_message(codec.request.encode({field: item}))
    await stream.end()
