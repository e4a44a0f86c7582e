"""BlazeClient: call an app's models from Python, with the app's own types.

Calls name a model by its name (`await client.predict("add", a=1, b=2)`, untyped) or by the
decorated function itself (`await client.predict(add, a=1, b=2)`), which mypy checks against
the function's signature and types the result of. Failures raise RpcError; nothing from
grpclib or h2 leaks out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import ssl
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, overload

import h2.exceptions
from grpclib.client import Stream as ClientStream
from grpclib.config import Configuration
from grpclib.exceptions import GRPCError, StreamTerminatedError

from blazerpc.app import BlazeApp, Registry
from blazerpc.errors import REFUSED_HEADER, RpcError, Status, UnknownModelError, WireError
from blazerpc.grpc.h2 import GracefulChannel
from blazerpc.grpc.service import CARDINALITIES, RawBytesCodec
from blazerpc.remote.discovery import RemoteService, discover
from blazerpc.remote.endpoints import Endpoint, Endpoints, parse_address
from blazerpc.schema.naming import RESULT_FIELD
from blazerpc.schema.spec import Shape
from blazerpc.security.requestids import REQUEST_ID
from blazerpc.security.tls import client_context
from blazerpc.wire.protobuf import SchemaCodec

__all__ = ("BlazeClient",)

_ATTEMPTS = 5
"""Sends of one unary call the servers refused before running it, at most."""
_RETRY_BACKOFF_S = 0.05
"""The wait before the second send; it doubles (with jitter) for each one after."""

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
ModelRef = str | Callable[..., object]


class BlazeClient:
    """An async gRPC client for one app: `async with BlazeClient(port=50051, app=app) as client`.

    `timeout` is the default deadline of every call, in seconds (None: no deadline).
    `metadata` is sent with every call; a model reads it as `Context.metadata`.

    Over TLS: `tls_ca` is the CA that signed the server's certificate (`tls=True` trusts the
    system's roots instead, and `tls=` also takes an `ssl.SSLContext` of your own);
    `tls_cert` and `tls_key` are the client's certificate for a server that requires one.
    `api_key` is sent as `authorization: Bearer <key>` with every call.

    Several servers: `addresses=["10.0.0.7:50051", ...]`, or `resolve=True` for every address
    `host` resolves to (a Kubernetes headless Service; looked up again every 30 s). Calls go to
    each in turn, a server that refuses, drains or fails rests a while, and a unary call
    refused before its model ran is sent again to the next (docs/serving.md).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 50051,
        *,
        registry: Registry | None = None,
        app: BlazeApp | None = None,
        timeout: float | None = None,
        service: str | None = None,
        metadata: Mapping[str, str] | None = None,
        tls: bool | ssl.SSLContext = False,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        api_key: str | None = None,
        addresses: Sequence[str] | None = None,
        resolve: bool = False,
    ) -> None:
        if api_key is not None and (not api_key or not all(33 <= ord(c) <= 126 for c in api_key)):
            raise ValueError(  # never the key itself: messages end up in logs
                "BlazeClient(api_key=...): a key is printable ASCII with no spaces or line "
                "breaks; strip what you read from a file (.strip())."
            )
        checked = _checked_metadata(metadata or {})  # before the channel: nothing to close
        if registry is None and app is not None:
            registry = app.registry
        self._schema = registry.schema if registry is not None else None
        self._codecs = SchemaCodec(self._schema) if self._schema is not None else None
        self._remote: RemoteService | None = None
        self._service = service
        context = (
            tls
            if isinstance(tls, ssl.SSLContext)
            else client_context(tls_ca, tls_cert, tls_key)
            if tls or tls_ca or tls_cert
            else None
        )
        if addresses is not None and resolve:
            raise ValueError("BlazeClient: give addresses= or resolve=True, not both.")
        pairs = [parse_address(address) for address in addresses or ()]
        if addresses is not None and not pairs:
            raise ValueError("BlazeClient(addresses=[]): name at least one host:port.")
        if not pairs and not resolve:
            pairs = [(host, port)]
        # with resolve, the connections go to addresses: the certificate names the host
        config = Configuration(ssl_target_name_override=host) if resolve and context else None

        def connect(to_host: str, to_port: int) -> GracefulChannel:
            return GracefulChannel(
                to_host, to_port, codec=RawBytesCodec(), ssl=context, config=config
            )

        self._endpoints = Endpoints(pairs, connect, resolve=(host, port) if resolve else None)
        self._owns_channel = True
        self.timeout = timeout
        self.metadata: dict[str, str] = checked
        if api_key is not None:
            self.metadata["authorization"] = f"Bearer {api_key}"

    def with_timeout(self, timeout: float | None) -> BlazeClient:
        """The same connection with another default deadline, for typed calls that need one."""
        view = object.__new__(BlazeClient)
        view.__dict__.update(self.__dict__)
        view._owns_channel = False
        view.timeout = timeout
        return view

    def with_metadata(self, metadata: Mapping[str, str]) -> BlazeClient:
        """The same connection, sending `metadata` too (on top of the client's own)."""
        view = object.__new__(BlazeClient)
        view.__dict__.update(self.__dict__)
        view._owns_channel = False
        view.metadata = self.metadata | _checked_metadata(metadata)
        return view

    async def __aenter__(self) -> BlazeClient:
        if self._schema is None:
            try:
                await self._learn_schema()
            except BaseException:
                self.close()  # __aexit__ will not run
                raise
        return self

    async def _learn_schema(self) -> RemoteService:
        """Without an app, the server's models come from its reflection service, once."""
        for attempt in itertools.count(1):
            if self._remote is not None:
                break
            try:
                endpoint = await self._pick(self.timeout)
                self._remote = await discover(endpoint.channel, self._service, self.metadata)
            except RpcError as err:  # unreachable, or no address yet: again, or the next one
                if err.status is not Status.UNAVAILABLE or attempt >= _ATTEMPTS:
                    raise
                await asyncio.sleep(_backoff(attempt))
        assert self._remote is not None
        return self._remote

    async def _pick(self, timeout: float | None = None) -> Endpoint:
        """The server for the next call, within `timeout` (looking its name up may wait)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._endpoints.pick()
        except TimeoutError:
            raise RpcError(
                Status.DEADLINE_EXCEEDED, f"no server address found within {timeout} s"
            ) from None
        except OSError as err:  # a name that resolves to nothing (yet)
            raise RpcError(Status.UNAVAILABLE, f"no server to call: {err}", refused=True) from None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a view from with_timeout() or with_metadata() leaves it)."""
        if self._owns_channel:
            self._endpoints.close()

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
        """Call a unary model and return its result.

        A call the server refused before its model ran (loading, draining, a GOAWAY, no
        connection) is sent again, to the next server if there are several, after a short
        backoff and within the call's deadline: the model never runs twice.
        """
        target, timeout = await self._prepare(model, Shape.UNARY, args, fields)
        payload = _encode(target, fields)
        loop = asyncio.get_running_loop()
        ends = None if timeout is None else loop.time() + timeout
        for attempt in itertools.count(1):
            left = None if ends is None else max(0.0, ends - loop.time())
            try:
                endpoint = await self._pick(left)
                async with self._call(target, left, endpoint) as stream:
                    await stream.send_message(payload, end=True)
                    return _result(target, await _last_message(stream))
            except RpcError as err:
                wait = _backoff(attempt)
                out_of_time = ends is not None and loop.time() + wait >= ends
                retries = err.refused and err.status is Status.UNAVAILABLE
                if not retries or attempt >= _ATTEMPTS or out_of_time:
                    raise
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # itertools.count never ends

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
        return self._stream(model, args, fields)

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
        target, deadline = await self._prepare(model, Shape.CLIENT_STREAMING, (), {}, timeout)
        async with self._call(target, deadline, await self._pick(deadline)) as stream:
            async for data in _send_while_receiving(stream, target, items):
                return _result(target, data)
            return _result(target, await _last_message(stream))

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
        return self._exchange(model, items, timeout)

    async def _stream(
        self, model: ModelRef, args: tuple[Any, ...], fields: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        target, deadline = await self._prepare(model, Shape.SERVER_STREAMING, args, fields)
        payload = _encode(target, fields)
        async with self._call(target, deadline, await self._pick(deadline)) as stream:
            await stream.send_message(payload, end=True)
            while (data := await stream.recv_message()) is not None:
                yield _result(target, data)

    async def _exchange(
        self,
        model: ModelRef,
        items: Iterable[Any] | AsyncIterable[Any],
        timeout: float | None,
    ) -> AsyncGenerator[Any, None]:
        target, deadline = await self._prepare(model, Shape.BIDIRECTIONAL, (), {}, timeout)
        async with self._call(target, deadline, await self._pick(deadline)) as stream:
            async for data in _send_while_receiving(stream, target, items):
                yield _result(target, data)

    async def _prepare(
        self,
        model: ModelRef,
        shape: Shape,
        args: tuple[Any, ...],
        fields: dict[str, Any],
        timeout: float | None = None,
    ) -> tuple[_Target, float | None]:
        """The model's target, and the call's deadline: `timeout`, else the default.

        A model named by string may also carry its `timeout` among the fields.
        """
        spec = await self._find(model)
        names = spec.field_names
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
        known = set(names)
        unknown = sorted(set(fields) - known) if not shape.is_client_streaming else []
        if unknown:
            raise TypeError(
                f"model {spec.name!r} has no parameter {unknown[0]!r}. "
                f"Its parameters: {', '.join(names) or 'none'}."
            )
        return spec, deadline

    async def _find(self, model: ModelRef) -> _Target:
        if self._schema is None or self._codecs is None:
            if not isinstance(model, str):
                raise TypeError(
                    f"{getattr(model, '__qualname__', model)!r}: a client without the app "
                    "calls models by name; pass app= to call them by function."
                )
            remote = (await self._learn_schema()).find(model)
            return _Target(
                model,
                remote.shape,
                remote.request.field_names,
                remote.streamed_parameter,
                remote.path,
                remote.request,
                remote.response,
            )
        for spec in self._schema.models:
            if spec.name == model or spec.function is model:
                codec = self._codecs.models[spec.name]
                return _Target(
                    spec.name,
                    spec.shape,
                    [f.name for f in spec.request.fields],
                    spec.streamed_parameter,
                    self._schema.rpc_path(spec),
                    codec.request,
                    codec.response,
                )
        served = [spec.name for spec in self._schema.models]
        name = model if isinstance(model, str) else getattr(model, "__name__", repr(model))
        raise RpcError(Status.NOT_FOUND, str(UnknownModelError.no_model(name, served)))

    @contextlib.asynccontextmanager
    async def _call(
        self, spec: _Target, deadline: float | None, endpoint: Endpoint
    ) -> AsyncIterator[ClientStream[bytes, bytes]]:
        """One call on `endpoint`'s connection; a failure is an RpcError, `refused` when the
        server never ran the model (then, and on any UNAVAILABLE, the endpoint rests)."""
        stream: ClientStream[bytes, bytes] | None = None
        try:
            async with endpoint.channel.request(
                spec.path,
                CARDINALITIES[spec.shape],
                bytes,
                bytes,
                timeout=deadline,
                metadata=self.metadata or None,
            ) as stream:
                yield stream
        except GRPCError as err:
            if err.status is Status.UNAVAILABLE:
                self._endpoints.failed(endpoint)
            raise RpcError(
                err.status,
                err.message or "",
                request_id=_request_id(stream),
                refused=_was_refused(stream),
            ) from None
        except TimeoutError:
            if stream is None or not stream._send_request_done:  # never connected: it rests
                self._endpoints.failed(endpoint)
            raise RpcError(
                Status.DEADLINE_EXCEEDED, f"no answer from model {spec.name!r} within {deadline} s"
            ) from None
        except (
            StreamTerminatedError,
            ConnectionError,
            OSError,
            h2.exceptions.ProtocolError,
        ) as err:
            self._endpoints.failed(endpoint)
            # never sent, or refused unprocessed (REFUSED_STREAM, as at a GOAWAY): not run
            refused = stream is None or not stream._send_request_done or _is_refused_stream(err)
            raise RpcError(
                Status.UNAVAILABLE,
                f"connection to the server at {endpoint.address} failed: {err}",
                refused=refused,
            ) from None
        self._endpoints.succeeded(endpoint)


_METHODS = {
    Shape.UNARY: "predict",
    Shape.SERVER_STREAMING: "stream",
    Shape.CLIENT_STREAMING: "send_stream",
    Shape.BIDIRECTIONAL: "exchange",
}


class _Coding(Protocol):
    def encode(self, values: Mapping[str, object]) -> bytes: ...
    def decode(self, data: bytes) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class _Target:
    """What a call needs of a model, from the app or learned through reflection."""

    name: str
    shape: Shape
    field_names: list[str]
    streamed: str | None
    path: str
    request: _Coding
    response: _Coding


def _checked_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata gRPC can carry: lowercase ASCII keys, text values, no reserved `grpc-` keys."""
    checked = {}
    for key, value in metadata.items():
        if (
            not isinstance(key, str)
            or not key
            or key != key.lower()
            or key.startswith(("grpc-", ":"))
            or key.endswith("-bin")
            or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in key)
        ):
            raise ValueError(
                f"metadata key {key!r} cannot be sent: use lowercase ASCII letters, digits, "
                "'-', '_' or '.', not starting with 'grpc-' nor ending with '-bin' "
                "(for example 'x-user-id')."
            )
        if not isinstance(value, str) or not value.isascii() or "\n" in value:
            shown = "(not shown)" if key == "authorization" else repr(value)  # a secret
            raise ValueError(
                f"metadata {key!r}: the value must be printable ASCII text, got {shown}."
            )
        checked[key] = value
    return checked


def _encode(target: _Target, fields: Mapping[str, object]) -> bytes:
    return target.request.encode(fields)


async def _last_message(stream: ClientStream[bytes, bytes]) -> bytes | None:
    """The one response message; with none, the trailers raise the call's status."""
    data = await stream.recv_message()
    if data is None:
        await stream.recv_trailing_metadata()  # GRPCError when the call failed
    return data


def _backoff(attempt: int) -> float:
    """The wait before send number `attempt + 1`: doubling, with jitter."""
    return float(_RETRY_BACKOFF_S * 2 ** (attempt - 1) * (0.5 + random.random() / 2))


def _was_refused(stream: ClientStream[bytes, bytes] | None) -> bool:
    """Whether the server said the model never ran (REFUSED_HEADER in the trailers)."""
    trailers = stream.trailing_metadata if stream is not None else None
    return bool(trailers) and trailers.get(REFUSED_HEADER) == "1"  # type: ignore[union-attr]


def _is_refused_stream(error: Exception) -> bool:
    """grpclib's words for a stream the server reset with REFUSED_STREAM (unprocessed)."""
    said = str(error)
    return "error_code: 7" in said or "REFUSED_STREAM" in said


def _request_id(stream: ClientStream[bytes, bytes] | None) -> str | None:
    """The call's `x-request-id`, from its trailers or headers, when the server sent one."""
    if stream is None:
        return None
    for metadata in (stream.trailing_metadata, stream.initial_metadata):
        value = metadata.get(REQUEST_ID) if metadata else None
        if isinstance(value, str):
            return value
    return None


def _result(target: _Target, data: bytes | None) -> Any:
    if data is None:
        raise RpcError(Status.INTERNAL, "the server ended the call without a response")
    try:
        values = target.response.decode(data)
    except WireError as err:
        raise RpcError(Status.INTERNAL, f"the server's response does not match: {err}") from None
    return values.get(RESULT_FIELD)


async def _send_while_receiving(
    stream: ClientStream[bytes, bytes],
    target: _Target,
    items: Iterable[Any] | AsyncIterable[Any],
) -> AsyncGenerator[bytes, None]:
    """Send `items` in the background while yielding what the server answers.

    Answers are read while the items are still being produced, so a server's early status (a
    passed deadline, a bad item) ends the call at once; an item that cannot be encoded does too.
    """
    await stream.send_request()  # headers first, so answers can arrive before the items end
    sender = asyncio.ensure_future(_send_all(stream, target, items))
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
    target: _Target,
    items: Iterable[Any] | AsyncIterable[Any],
) -> None:
    field = target.streamed or ""
    if isinstance(items, AsyncIterable):
        async for item in items:
            await stream.send_message(target.request.encode({field: item}))
    else:
        for item in items:
            await stream.send_message(target.request.encode({field: item}))
    await stream.end()
