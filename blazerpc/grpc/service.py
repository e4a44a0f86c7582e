"""The typed gRPC service: each model's rpc as a grpclib handler, over the one Boundary.

`_GrpcPort` is gRPC's CallPort: length-prefixed protobuf within the server's size limits.
Messages pass grpclib as bytes (`RawBytesCodec`) and are decoded inside the Boundary, so a
bad message becomes INVALID_ARGUMENT like any other failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from blazerpc.context import Context
from blazerpc.errors import NOT_RUN, REFUSED_HEADER, ResultError, WireError, cancelled_status
from blazerpc.grpc.h2 import request_reader
from blazerpc.grpc.messages import receive_message, response_encoding, send_compressed
from blazerpc.runtime.boundary import Boundary, Limits
from blazerpc.schema.naming import RESULT_FIELD
from blazerpc.schema.spec import ServiceSpec, Shape
from blazerpc.security.requestids import REQUEST_ID, request_id
from blazerpc.wire.protobuf import ModelCodec, SchemaCodec

__all__ = (
    "CARDINALITIES",
    "GrpcCall",
    "RawBytesCodec",
    "RawStream",
    "ServiceHandlers",
    "send_failure",
    "with_request_id",
)

RawStream = Stream[bytes, bytes]


CARDINALITIES = {
    Shape.UNARY: Cardinality.UNARY_UNARY,
    Shape.SERVER_STREAMING: Cardinality.UNARY_STREAM,
    Shape.CLIENT_STREAMING: Cardinality.STREAM_UNARY,
    Shape.BIDIRECTIONAL: Cardinality.STREAM_STREAM,
}
"""How grpclib names each shape."""


class RawBytesCodec(ProtoCodec):
    """grpclib's codec slot: model calls pass bytes through, decoded inside our error boundary.

    grpclib has one codec per server or channel; protobuf classes (health, reflection) keep
    grpclib's own protobuf coding.
    """

    def encode(self, message: Any, message_type: Any) -> bytes:
        """The bytes as they are, or a protobuf message serialized."""
        if message_type is bytes:
            return bytes(message)
        return super().encode(message, message_type)

    def decode(self, data: bytes, message_type: Any) -> Any:
        """The bytes as they are, or a protobuf message parsed."""
        if message_type is bytes:
            return data
        return super().decode(data, message_type)


class ServiceHandlers:
    """grpclib's handler mapping for one schema: `/package.Service/PredictX` -> adapter."""

    def __init__(
        self,
        schema: ServiceSpec,
        codecs: SchemaCodec,
        limits: Limits,
        calls: dict[str, Boundary],
        *,
        compression: str = "off",
    ) -> None:
        self._mapping = {
            schema.rpc_path(model): Handler(
                _adapter(calls[model.name], codecs.models[model.name], limits, compression),
                CARDINALITIES[model.shape],
                bytes,
                bytes,
            )
            for model in schema.models
        }

    def __mapping__(self) -> dict[str, Handler]:
        return self._mapping


def _adapter(
    boundary: Boundary, codec: ModelCodec, limits: Limits, compression: str
) -> Callable[[RawStream], Awaitable[None]]:
    name = boundary.model.name
    is_single = boundary.model.shape in (Shape.UNARY, Shape.SERVER_STREAMING)

    async def handle(stream: RawStream) -> None:
        port = _GrpcPort(stream, codec, limits, name, is_single, compression)
        try:  # with_request_id(), inlined: one coroutine less on every call
            await boundary.run(port)
        except GRPCError as error:
            await send_failure(stream, port, error)
            return
        if port.echoes_request_id:
            await stream.send_trailing_metadata(metadata=port.id_metadata)

    return handle


async def with_request_id(stream: RawStream, call: GrpcCall, run: Awaitable[None]) -> None:
    """Run a model call's handler; a failed call has its `x-request-id` in its trailers.

    A call that succeeds has it there only when the caller sent one: a fresh value in every
    response cost about 9 us of server CPU per call (HPACK encodes it anew each time, and it
    churns the header table: bench/hotpath.py), and the id is in the access log anyway.
    """
    try:
        await run
    except GRPCError as error:
        await send_failure(stream, call, error)
        return
    if call.echoes_request_id:
        await stream.send_trailing_metadata(metadata=call.id_metadata)


async def send_failure(stream: RawStream, call: GrpcCall, error: GRPCError) -> None:
    """End a failed call: its status, its message and its `x-request-id`, in the trailers;
    and REFUSED_HEADER if its model never ran, so a client may send it elsewhere."""
    metadata = call.id_metadata
    if error.details is NOT_RUN:
        metadata[REFUSED_HEADER] = "1"
    await stream.send_trailing_metadata(
        status=error.status, status_message=error.message, metadata=metadata
    )


class GrpcCall:
    """What every port over a grpclib stream knows of its caller: peer, deadline, metadata."""

    __slots__ = ("_stream", "echoes_request_id", "request_id")

    request_id: str
    """The call's id (`x-request-id`), the caller's or a new one."""
    echoes_request_id: bool
    """Whether the caller sent the id: then its response says it too."""

    def __init__(self, stream: RawStream, same_call_as: GrpcCall | None = None) -> None:
        self._stream = stream
        if same_call_as is not None:  # another port over the same gRPC call: the same id
            self.request_id = same_call_as.request_id
            self.echoes_request_id = same_call_as.echoes_request_id
            return
        given = stream.metadata.get(REQUEST_ID) if stream.metadata else None
        self.request_id = request_id(given if isinstance(given, str) else None)
        self.echoes_request_id = given == self.request_id

    @property
    def id_metadata(self) -> dict[str, str]:
        """The response metadata that carries the call's id."""
        return {REQUEST_ID: self.request_id}

    @property
    def peer(self) -> str | None:
        """The caller's `host:port`, when known."""
        peer = self._stream.peer
        address = peer.addr() if peer is not None else None
        return f"{address[0]}:{address[1]}" if address else None

    @property
    def deadline(self) -> float | None:
        """The caller's deadline on the event loop's clock, for the batcher."""
        deadline = self._stream.deadline
        if deadline is None:
            return None
        return asyncio.get_running_loop().time() + deadline.time_remaining()

    def context(self) -> Context:
        """The call's Context: metadata (text values), deadline and peer."""
        stream = self._stream
        remaining = stream.deadline.time_remaining() if stream.deadline is not None else None
        return Context(
            {
                key: value
                for key, value in (stream.metadata or {}).items()
                if isinstance(value, str)
            },
            deadline=None if remaining is None else time.monotonic() + remaining,
            peer=self.peer,
            request_id=self.request_id,
        )

    def cancelled_status(self) -> Status:
        """DEADLINE_EXCEEDED once the deadline has passed, else CANCELLED."""
        deadline = self._stream.deadline
        return cancelled_status(
            is_past_deadline=deadline is not None and deadline.time_remaining() <= 0
        )


class _GrpcPort(GrpcCall):
    """A gRPC call's messages: length-prefixed protobuf, within the server's size limits.

    `is_single`: the call has one request message, due with its headers, so a wait for it is
    a stalled message (message_timeout), not a gap between messages.
    """

    __slots__ = ("_codec", "_encoding", "_is_due", "_limits", "_model", "_reader")
    transport = "grpc"

    def __init__(
        self,
        stream: RawStream,
        codec: ModelCodec,
        limits: Limits,
        model: str,
        is_single: bool,
        compression: str,
    ) -> None:
        super().__init__(stream)
        self._reader = request_reader(stream)
        self._encoding = response_encoding(self._reader, compression)
        self._codec = codec
        self._limits = limits
        self._model = model
        self._is_due = is_single

    async def receive(self) -> dict[str, Any] | None:
        is_due, self._is_due = self._is_due, False
        data = await receive_message(self._reader, self._limits, started=is_due)
        return None if data is None else self._codec.request.decode(data)

    async def send(self, result: object) -> None:
        try:
            data = self._codec.response.encode({RESULT_FIELD: result})
        except WireError as err:
            raise ResultError(str(err)) from None
        self._limits.check_response(len(data), self._model)
        if self._encoding is None:
            await self._stream.send_message(data)
        else:
            await send_compressed(self._stream, data, self._encoding)
