"""The Open Inference Protocol (KServe v2) over gRPC, next to the app's typed service.

`inference.GRPCInferenceService` serves every model of the app, mapped to tensors by
tensors.py, through the same Boundary as the typed service (admission, limits, drain,
metrics, access log `via=oip`):

- ModelInfer: unary and client-streaming models (a client stream of one request).
- ModelStreamInfer, with OpenVINO Model Server's stream semantics: the first request picks the
  model (an unknown one ends the stream with NOT_FOUND); a later request naming another model
  gets an error response and the stream goes on. Unary and server-streaming models answer each
  request in turn; a client-streaming or bidirectional model is one call for the whole stream,
  each request an item, so its state lives as long as the stream. A request that fails gets a
  response with `error_message` (`STATUS: message`), and the stream stays usable.
- A request with Triton's `triton_enable_empty_final_response` parameter gets
  `triton_final_response` on each response, and an empty final response after the last item
  of a server stream, so a stock Triton client knows the stream is complete.
- Every response carries the `id` of the request it answers, and a `timestamp` parameter:
  the request's own `timestamp` (or `OVMS_MP_TIMESTAMP`) parameter, else a per-stream counter
  from 0. A model sees it as `Context.timestamp`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, NoReturn

from google.protobuf.message import DecodeError, Message
from grpclib.const import Cardinality, Handler
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from blazerpc.context import Context
from blazerpc.errors import (
    UnknownModelError,
    UnsupportedCallError,
    WireError,
    to_status,
)
from blazerpc.grpc.h2 import request_reader
from blazerpc.grpc.messages import receive_message, response_encoding, send_compressed
from blazerpc.grpc.service import GrpcCall, RawStream, with_request_id
from blazerpc.openinference.protos import INFERENCE
from blazerpc.openinference.tensors import ModelTensors
from blazerpc.runtime.admission import Admission
from blazerpc.runtime.boundary import Boundary, Limits
from blazerpc.schema.naming import rpc_path
from blazerpc.schema.spec import Shape

__all__ = ("InferenceProtocol",)

_TIMESTAMP_PARAMETERS = ("timestamp", "OVMS_MP_TIMESTAMP")
_WANTS_FINAL = "triton_enable_empty_final_response"
_FINAL = "triton_final_response"
_C = INFERENCE.classes
_PROBES = ("ServerLive", "ServerReady", "ModelReady")
_InferRequest = _C["ModelInferRequest"]
_InferResponse = _C["ModelInferResponse"]
_StreamResponse = _C["ModelStreamInferResponse"]


@dataclass(frozen=True, slots=True)
class _Served:
    tensors: ModelTensors
    boundary: Boundary

    @property
    def name(self) -> str:
        return self.tensors.model.name


class InferenceProtocol:
    """grpclib's handler mapping for `inference.GRPCInferenceService`, over one app's models."""

    def __init__(
        self,
        tensors: Mapping[str, ModelTensors],
        calls: Mapping[str, Boundary],
        admission: Admission,
        limits: Limits,
        *,
        lists_names: bool = True,
        compression: str = "off",
        stream_shape: str = "triton",
    ) -> None:
        self._models = {name: _Served(tensors[name], calls[name]) for name in tensors}
        self._lists_names = lists_names  # off when calls need a key: ModelReady answers anyone
        self._admission = admission
        self._limits = limits
        self._compression = compression
        self._wraps_stream = stream_shape == "triton"

    @property
    def probe_paths(self) -> list[str]:
        """The liveness and readiness methods: open to probes when calls need an API key."""
        return [rpc_path(INFERENCE.service, name) for name in _PROBES]

    def __mapping__(self) -> dict[str, Handler]:
        unary = Cardinality.UNARY_UNARY
        rows: list[tuple[str, Callable[[Any], Awaitable[None]], Cardinality, Any, Any]] = [
            ("ServerLive", self._server_live, unary, *_pair("ServerLive")),
            ("ServerReady", self._server_ready, unary, *_pair("ServerReady")),
            ("ModelReady", self._model_ready, unary, *_pair("ModelReady")),
            ("ServerMetadata", self._server_metadata, unary, *_pair("ServerMetadata")),
            ("ModelMetadata", self._model_metadata, unary, *_pair("ModelMetadata")),
            ("ModelInfer", self._model_infer, unary, bytes, bytes),
            ("ModelStreamInfer", self._model_stream_infer, Cardinality.STREAM_STREAM, bytes, bytes),
        ]
        return {
            rpc_path(INFERENCE.service, name): Handler(handler, cardinality, request, response)
            for name, handler, cardinality, request, response in rows
        }

    async def _server_live(self, stream: Stream[Message, Message]) -> None:
        await stream.recv_message()
        await stream.send_message(_C["ServerLiveResponse"](live=True))

    async def _server_ready(self, stream: Stream[Message, Message]) -> None:
        await stream.recv_message()
        ready = self._admission.is_ready
        await stream.send_message(_C["ServerReadyResponse"](ready=ready))

    async def _model_ready(self, stream: Stream[Message, Message]) -> None:
        request: Any = await stream.recv_message()
        self._served(request.name, request.version)
        ready = self._admission.is_model_ready(request.name)
        await stream.send_message(_C["ModelReadyResponse"](ready=ready))

    async def _server_metadata(self, stream: Stream[Message, Message]) -> None:
        await stream.recv_message()
        await stream.send_message(
            _C["ServerMetadataResponse"](
                name="blazerpc", version=version("blazerpc"), extensions=["model_stream_infer"]
            )
        )

    async def _model_metadata(self, stream: Stream[Message, Message]) -> None:
        request: Any = await stream.recv_message()
        tensors = self._served(request.name, request.version).tensors
        response: Any = _C["ModelMetadataResponse"](
            name=tensors.model.name, versions=[tensors.model.version], platform="blazerpc"
        )
        for specs, target in (
            (tensors.inputs, response.inputs),
            (tensors.outputs, response.outputs),
        ):
            for spec in specs.values():
                target.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
        await stream.send_message(response)

    async def _model_infer(self, stream: RawStream) -> None:
        session = _Session(stream, self._limits, self._compression, is_stream=False)
        await with_request_id(stream, session.call, self._infer(session))

    async def _infer(self, session: _Session) -> None:
        request = await _first(session)
        if request is None:
            return
        served = self._served(request.model_name, request.model_version)
        if served.tensors.model.shape.is_server_streaming:
            _fail(
                UnsupportedCallError(
                    f"model {served.name!r} streams its results; call ModelStreamInfer."
                ),
                served.name,
            )
        await served.boundary.run(_InferPort(session, served, request, reads_stream=False))

    async def _model_stream_infer(self, stream: RawStream) -> None:
        session = _Session(
            stream, self._limits, self._compression, is_stream=True, wraps=self._wraps_stream
        )
        await with_request_id(stream, session.call, self._stream_infer(session))

    async def _stream_infer(self, session: _Session) -> None:
        first = await _first(session)
        if first is None:
            return
        served = self._served(first.model_name, first.model_version)
        reads_stream = served.tensors.model.shape.is_client_streaming
        if not session.wraps:  # MLServer's shape: the stream is one call; an error ends it
            await served.boundary.run(_InferPort(session, served, first, reads_stream=reads_stream))
            return
        if reads_stream:
            port = _InferPort(session, served, first, reads_stream=True)
            try:
                await served.boundary.run(port)
            except GRPCError as error:
                await session.respond_error(error, port.infer_id)
            return
        request: Any = first
        while request is not None:
            if request.model_name != served.name:
                await session.respond_error(_other_model(served.name, request), request.id)
            else:
                port = _InferPort(session, served, request, reads_stream=False)
                try:
                    await served.boundary.run(port)
                except GRPCError as error:
                    await session.respond_error(error, request.id)
                else:
                    await port.end_of_stream()
            request = await session.next_request_or_report()

    def _served(self, name: str, model_version: str) -> _Served:
        served = self._models.get(name)
        if served is None:
            listed = self._models if self._lists_names else None
            _fail(UnknownModelError.no_model(name, listed), name)
        version = served.tensors.model.version
        if model_version not in ("", version):
            _fail(
                UnknownModelError(
                    f"model {name!r} has no version {model_version!r}; it has version "
                    f"{version!r} (or leave the version empty)."
                ),
                name,
            )
        return served


def _pair(rpc: str) -> tuple[type[Message], type[Message]]:
    return _C[f"{rpc}Request"], _C[f"{rpc}Response"]


def _fail(error: Exception, model: str) -> NoReturn:
    """End the call with the status errors.to_status picks for `error`."""
    status, message = to_status(error, model)
    raise GRPCError(status, message)


def _other_model_error(model: str, request: Any) -> WireError:
    return WireError(
        f"this stream serves model {model!r} (its first request picked it); this request "
        f"names {request.model_name!r}. Open another stream for that model."
    )


def _other_model(model: str, request: Any) -> GRPCError:
    return GRPCError(*to_status(_other_model_error(model, request), model))


async def _first(session: _Session) -> Any:
    """The call's first request; bytes that are not a ModelInferRequest end the call."""
    try:
        return await session.next_request()
    except WireError as error:
        _fail(error, "-")


class _Session:
    """One ModelInfer or ModelStreamInfer call: its requests in, its responses out."""

    def __init__(
        self,
        stream: RawStream,
        limits: Limits,
        compression: str,
        *,
        is_stream: bool,
        wraps: bool = False,
    ) -> None:
        self.stream = stream
        self.call = GrpcCall(stream)
        self.reader = request_reader(stream)
        self.encoding = response_encoding(self.reader, compression)
        self.limits = limits
        self.is_stream = is_stream
        self.wraps = is_stream and wraps
        """Responses go in Triton's ModelStreamInferResponse, errors in its error_message."""
        self._is_due = not is_stream  # ModelInfer's one request comes with its headers
        self._next_timestamp = 0

    async def next_request(self) -> Any:
        """The next request, parsed, or None at the end; WireError if it is not one."""
        is_due, self._is_due = self._is_due, False
        data = await receive_message(self.reader, self.limits, started=is_due)
        if data is None:
            return None
        try:
            return _InferRequest.FromString(data)
        except DecodeError as err:
            raise WireError(f"the request is not a valid ModelInferRequest ({err}).") from None

    async def next_request_or_report(self) -> Any:
        """Like next_request, but a malformed request is answered with an error, and skipped."""
        while True:
            try:
                return await self.next_request()
            except WireError as error:
                status, message = to_status(error, "-")
                await self.respond_error(GRPCError(status, message), "")

    def timestamp_of(self, request: Any) -> int:
        """The request's timestamp parameter, else the stream's counter."""
        for name in _TIMESTAMP_PARAMETERS:
            if name in request.parameters:
                parameter = request.parameters[name]
                choice = parameter.WhichOneof("parameter_choice")
                if choice not in ("int64_param", "uint64_param"):
                    raise WireError(f"parameter {name!r} is a whole number (int64_param).")
                stamp = int(getattr(parameter, choice))
                self._next_timestamp = stamp + 1
                return stamp
        stamp = self._next_timestamp
        self._next_timestamp += 1
        return stamp

    def new_response(self) -> tuple[Any, Any]:
        """`(message to send, ModelInferResponse to fill)`: on a stream, the second lives in
        the first, so nothing is copied."""
        if self.wraps:
            outer: Any = _StreamResponse()
            return outer, outer.infer_response
        response = _InferResponse()
        return response, response

    async def respond(self, message: Any, model: str) -> None:
        """Send a message from new_response(), within the response size limit."""
        data = message.SerializeToString()
        self.limits.check_response(len(data), model)
        await self.send(data)

    async def respond_error(self, error: GRPCError, infer_id: str) -> None:
        """A per-request error on a stream: `error_message`, and the stream goes on (unless
        the stream has no wrapper to carry it: then the error ends it)."""
        if not self.wraps:
            raise error
        message = f"{error.status.name}: {error.message}"
        response: Any = _StreamResponse(error_message=message)
        response.infer_response.id = infer_id
        await self.send(response.SerializeToString())

    async def send(self, data: bytes) -> None:
        """Send one response message, compressed if the call's responses are."""
        if self.encoding is None:
            await self.stream.send_message(data)
        else:
            await send_compressed(self.stream, data, self.encoding)


class _InferPort(GrpcCall):
    """One model call through the Open Inference Protocol, as a CallPort."""

    transport = "oip"

    def __init__(
        self, session: _Session, served: _Served, first: Any, *, reads_stream: bool
    ) -> None:
        super().__init__(session.stream, same_call_as=session.call)
        self._session = session
        self._served = served
        self._tensors = served.tensors
        self._pending: Any = first
        self._reads_stream = reads_stream
        self._context: Context | None = None
        self.infer_id = ""
        self._requested: list[str] = []
        self._timestamp = 0
        self._wants_final = False
        self._final_flag = served.tensors.model.shape is Shape.UNARY

    def context(self) -> Context:
        self._context = super().context()
        self._context.timestamp = self._timestamp
        return self._context

    async def receive(self) -> dict[str, Any] | None:
        while True:
            request = await self._next()
            if request is None:
                return None
            if request.model_name != self._served.name:
                if not self._session.wraps:
                    raise _other_model_error(self._served.name, request)
                await self._session.respond_error(
                    _other_model(self._served.name, request), request.id
                )
                continue
            try:
                fields = self._read(request)
            except WireError as error:
                if not self._reads_stream or not self._session.wraps:
                    raise
                status, message = to_status(error, self._served.name)
                await self._session.respond_error(GRPCError(status, message), request.id)
                continue
            return fields

    async def send(self, result: object) -> None:
        rows = self._tensors.write_outputs(result, self._requested)
        message, response = self._new_response()
        if self._wants_final:
            response.parameters[_FINAL].bool_param = self._final_flag
        for name, datatype, shape, data in rows:
            response.outputs.add(name=name, datatype=datatype, shape=shape)
            response.raw_output_contents.append(data)
        await self._session.respond(message, self._served.name)

    def _new_response(self) -> tuple[Any, Any]:
        message, response = self._session.new_response()
        response.model_name = self._served.name
        response.model_version = self._served.tensors.model.version
        response.id = self.infer_id
        if self._session.wraps:
            response.parameters["timestamp"].int64_param = self._timestamp
        return message, response

    async def end_of_stream(self) -> None:
        """After a server stream's last item: the empty final response Triton clients ask for."""
        if not self._wants_final or self._final_flag:
            return
        message, response = self._new_response()
        response.parameters[_FINAL].bool_param = True
        await self._session.respond(message, self._served.name)

    async def _next(self) -> Any:
        if self._pending is not None:
            request, self._pending = self._pending, None
            return request
        if not self._reads_stream:
            return None
        return await self._session.next_request_or_report()

    def _read(self, request: Any) -> dict[str, Any]:
        """Take the request in: its id, timestamp and requested outputs, then its inputs."""
        self.infer_id = request.id
        self._timestamp = self._session.timestamp_of(request)
        if self._context is not None:
            self._context.timestamp = self._timestamp
        self._requested = [output.name for output in request.outputs]
        wants_final = request.parameters.get(_WANTS_FINAL)
        self._wants_final = wants_final is not None and wants_final.bool_param
        return self._tensors.read_inputs(request.inputs, request.raw_input_contents)
