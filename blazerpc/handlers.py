"""The one error boundary every call passes, and the gRPC side: a model -> a grpclib handler.

`Boundary` admits a call, runs it, turns any failure into a status (errors.to_status) and
records it (metrics, access log), whatever the transport; the HTTP gateway uses it too.
`_GrpcPort` is gRPC's CallPort: length-prefixed protobuf within the server's size limits.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from blazerpc.admission import Admission, Ticket
from blazerpc.batcher import Batcher
from blazerpc.calls import CallPort, ModelCall, Tally
from blazerpc.codec import CARDINALITIES, ModelCodec, SchemaCodec
from blazerpc.config import ServerConfig
from blazerpc.context import Context
from blazerpc.errors import (
    LimitError,
    ResultError,
    UnavailableError,
    WireError,
    to_status,
)
from blazerpc.metrics import Metrics
from blazerpc.schema import RESULT_FIELD, ServiceSpec

__all__ = (
    "Boundary",
    "GrpcCall",
    "Limits",
    "RawStream",
    "ServiceHandlers",
    "model_calls",
    "receive_message",
)

_PREFIX = struct.Struct(">?I")
_ENDED_BY_DRAIN = (
    "the server shut down before this call finished (its grace period ran out); "
    "retry, on another replica if there is one."
)

access_log = logging.getLogger("blazerpc.access")
"""One INFO line per call: `model shape STATUS 1.2ms [items=N] peer=host:port via=grpc`."""
RawStream = Stream[bytes, bytes]


def model_calls(
    schema: ServiceSpec, admission: Admission, metrics: Metrics | None
) -> dict[str, Boundary]:
    """Each model's call behind the boundary: shared by gRPC and HTTP, batchers included."""
    return {
        model.name: Boundary(
            ModelCall(
                model,
                Batcher(model, model.batching, metrics.batch_started if metrics else None)
                if model.batching is not None
                else None,
            ),
            admission,
            metrics,
        )
        for model in schema.models
    }


class Boundary:
    """Admits one model's calls, runs them, and turns every failure into a status.

    A failure leaves `run()` as GRPCError(status, message), whatever the transport; a
    cancelled call stays cancelled. Each call is counted (metrics) and logged (access log).
    """

    def __init__(self, call: ModelCall, admission: Admission, metrics: Metrics | None) -> None:
        self.call = call
        self.model = call.model
        self._admission = admission
        self._metrics = metrics
        self._times_items = metrics is not None and self.model.shape.is_server_streaming

    @property
    def batcher(self) -> Batcher | None:
        """The model's batcher, if it batches."""
        return self.call.batcher

    async def run(self, port: CallPort) -> None:
        """Admit, run and record one call."""
        model, admission, metrics = self.model, self._admission, self._metrics
        tally = Tally()
        if self._times_items and metrics is not None:
            tally.timer = metrics.stream_timer(model.name, tally.started)
        context = port.context() if model.context_parameter else None
        injected: dict[str, object] = {}
        if model.context_parameter is not None:
            injected[model.context_parameter] = context
        ticket: Ticket | None = None
        status = Status.OK
        try:
            ticket = admission.admit(model)
            await self.call.run(port, injected, tally)
        except asyncio.CancelledError:
            if context is not None:
                context.cancel()
            if ticket is not None and ticket.is_ended_by_drain:
                ticket.task.uncancel()
                status, message = to_status(UnavailableError(_ENDED_BY_DRAIN), model.name)
                raise GRPCError(status, message) from None
            status = port.cancelled_status()
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
                self._log_access(status, duration_s, tally, port)

    def _log_access(self, status: Status, duration_s: float, tally: Tally, port: CallPort) -> None:
        """`generate server_streaming OK 12.3ms items=40 peer=127.0.0.1:5123 via=grpc`."""
        model = self.model
        items = f" items={tally.items}" if model.shape.is_server_streaming else ""
        access_log.info(
            "%s %s %s %.1fms%s peer=%s via=%s",
            model.name,
            model.shape.value,
            status.name,
            duration_s * 1e3,
            items,
            port.peer or "-",
            port.transport,
        )


class ServiceHandlers:
    """grpclib's handler mapping for one schema: `/package.Service/PredictX` -> adapter."""

    def __init__(
        self,
        schema: ServiceSpec,
        codecs: SchemaCodec,
        config: ServerConfig,
        calls: dict[str, Boundary],
    ) -> None:
        limits = Limits.of(config)
        self._mapping = {
            schema.rpc_path(model): Handler(
                _adapter(calls[model.name], codecs.models[model.name], limits),
                CARDINALITIES[model.shape],
                bytes,
                bytes,
            )
            for model in schema.models
        }

    def __mapping__(self) -> dict[str, Handler]:
        return self._mapping


@dataclass(frozen=True, slots=True)
class Limits:
    """Message size limits, the same over every transport."""

    max_request_bytes: int
    max_response_bytes: int

    @classmethod
    def of(cls, config: ServerConfig) -> Limits:
        return cls(config.max_request_bytes, config.max_response_bytes)

    def check_response(self, size: int, model: str) -> None:
        """A response over the limit fails its call with RESOURCE_EXHAUSTED."""
        if size > self.max_response_bytes:
            raise LimitError(
                f"model {model!r} produced a {size}-byte response, over the "
                f"server's limit of {self.max_response_bytes} bytes (max_response_bytes)."
            )

    def request_too_large(self, size: int) -> LimitError:
        """The error for a request message of `size` bytes, over the limit."""
        return LimitError(
            f"the request message is {size} bytes, over the server's limit of "
            f"{self.max_request_bytes} bytes (max_request_bytes). Send less per message, "
            "or stream it in parts."
        )


def _adapter(
    boundary: Boundary, codec: ModelCodec, limits: Limits
) -> Callable[[RawStream], Awaitable[None]]:
    name = boundary.model.name

    async def handle(stream: RawStream) -> None:
        await boundary.run(_GrpcPort(stream, codec, limits, name))

    return handle


class GrpcCall:
    """What every port over a grpclib stream knows of its caller: peer, deadline, metadata."""

    __slots__ = ("_stream",)

    def __init__(self, stream: RawStream) -> None:
        self._stream = stream

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
        )

    def cancelled_status(self) -> Status:
        """DEADLINE_EXCEEDED once the deadline has passed, else CANCELLED."""
        deadline = self._stream.deadline
        if deadline is not None and deadline.time_remaining() <= 0:
            return Status.DEADLINE_EXCEEDED
        return Status.CANCELLED


class _GrpcPort(GrpcCall):
    """A gRPC call's messages: length-prefixed protobuf, within the server's size limits."""

    __slots__ = ("_codec", "_limits", "_model")
    transport = "grpc"

    def __init__(self, stream: RawStream, codec: ModelCodec, limits: Limits, model: str) -> None:
        super().__init__(stream)
        self._codec = codec
        self._limits = limits
        self._model = model

    async def receive(self) -> dict[str, Any] | None:
        data = await receive_message(self._stream, self._limits)
        return None if data is None else self._codec.request.decode(data)

    async def send(self, result: object) -> None:
        try:
            data = self._codec.response.encode({RESULT_FIELD: result})
        except WireError as err:
            raise ResultError(str(err)) from None
        self._limits.check_response(len(data), self._model)
        await self._stream.send_message(data)


async def receive_message(stream: RawStream, limits: Limits) -> bytes | None:
    """The next message, or None at the end; one declared over the limit is never read.

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
    if length > limits.max_request_bytes:
        raise limits.request_too_large(length)
    data = await http2_stream.recv_data(length)
    if len(data) != length:
        raise WireError(f"the request ended after {len(data)} of its {length} declared bytes.")
    return data
