"""A server's models learned through reflection, for a BlazeClient that has no app to import.

The client asks the server's reflection service for the file that defines the service and the
files it imports, builds message classes in a private pool, and converts plain Python values
to and from them by walking the descriptors:

- scalars, lists and maps as themselves; Timestamp as an aware UTC datetime, Duration as
  timedelta; enums as their number (equal to an IntEnum member);
- a message (a Struct or dataclass on the server) as a dict of its fields;
- a `...List` / `...Map` wrapper (a list of lists, a map of lists) as the list or map inside.

A field the response leaves out reads as None when its presence is tracked, else as its zero.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

import h2.exceptions
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError

from blazerpc.errors import RpcError, Status, WireError
from blazerpc.grpc.protocols import HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA
from blazerpc.openinference.protos import INFERENCE
from blazerpc.schema.markers import Tensor
from blazerpc.schema.naming import TENSOR_MESSAGE, rpc_name, rpc_path
from blazerpc.schema.spec import Shape
from blazerpc.schema.typemap import TENSOR_SPEC
from blazerpc.wire.arrays import array_from, array_parts

__all__ = ("RemoteMessage", "RemoteModel", "RemoteService", "discover")

_FieldDescriptor = descriptor.FieldDescriptor
_PROTOCOL_SERVICES = {
    HEALTH.service,
    INFERENCE.service,
    REFLECTION_V1.service,
    REFLECTION_V1ALPHA.service,
}
_Request = REFLECTION_V1.classes["ServerReflectionRequest"]
_Response = REFLECTION_V1.classes["ServerReflectionResponse"]


class RemoteMessage:
    """Plain Python values <-> one message class learned from the server."""

    def __init__(self, message: descriptor.Descriptor) -> None:
        self._descriptor = message
        self._class = message_factory.GetMessageClass(message)
        self.field_names = [field.name for field in message.fields]

    def encode(self, values: Mapping[str, object]) -> bytes:
        """The wire bytes of `values`; WireError names a field that does not fit."""
        message = self._class()
        _write(message, values, "")
        return bytes(message.SerializeToString())

    def decode(self, data: bytes) -> dict[str, Any]:
        """The fields of `data` as plain values."""
        try:
            message = self._class.FromString(data)
        except DecodeError as err:
            raise WireError(f"the bytes are not a {self._descriptor.name}: {err}") from None
        return _read(message)


class RemoteModel:
    """One rpc of the service, as the client needs it: shape, path and the two codecs."""

    def __init__(self, method: descriptor.MethodDescriptor) -> None:
        self.path = rpc_path(method.containing_service.full_name, method.name)
        self.shape = Shape.of(
            client_streaming=method.client_streaming, server_streaming=method.server_streaming
        )
        self.request = RemoteMessage(method.input_type)
        self.response = RemoteMessage(method.output_type)

    @property
    def streamed_parameter(self) -> str | None:
        """The request field that carries each item of the client's stream."""
        return self.request.field_names[0] if self.shape.is_client_streaming else None


class RemoteService:
    """The models of one service, found by model name (`text-embed` -> `PredictTextEmbed`)."""

    def __init__(self, service: descriptor.ServiceDescriptor) -> None:
        self.name = service.full_name
        self._models = {method.name: RemoteModel(method) for method in service.methods}

    def find(self, model: str) -> RemoteModel:
        """The model called `model`, or NOT_FOUND listing what the server has."""
        found = self._models.get(rpc_name(model))
        if found is None:
            names = ", ".join(self._models)
            raise RpcError(
                Status.NOT_FOUND,
                f"model {model!r} is not served by {self.name}; its rpcs are: {names}.",
            )
        return found


async def discover(
    channel: Channel, service: str | None = None, metadata: Mapping[str, str] | None = None
) -> RemoteService:
    """Ask the server's reflection service for `service` (or its only model service).

    `metadata` goes with each request (the client's API key, for a server that wants one).
    """
    files = _Files(channel, metadata or {})
    listed = await files.ask(_Request(list_services=""))
    names = [s.name for s in listed.list_services_response.service]
    candidates = [name for name in names if name not in _PROTOCOL_SERVICES]
    if service is None:
        if len(candidates) != 1:
            raise RpcError(
                Status.FAILED_PRECONDITION,
                f"the server offers {len(candidates)} services ({', '.join(candidates)}); "
                "name one with BlazeClient(..., service='package.Service').",
            )
        service = candidates[0]
    elif service not in names:
        raise RpcError(
            Status.NOT_FOUND, f"the server has no service {service!r}; it lists {names}."
        )
    pool = await files.pool_for_symbol(service)
    return RemoteService(pool.FindServiceByName(service))


class _Files:
    """Reflection requests on one channel, and the files they return, dependencies first."""

    def __init__(self, channel: Channel, metadata: Mapping[str, str]) -> None:
        self._channel = channel
        self._metadata = metadata
        self._protos: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    async def ask(self, request: Any) -> Any:
        path = rpc_path(REFLECTION_V1.service, "ServerReflectionInfo")
        response: Any = None
        try:
            async with self._channel.request(
                path,
                Cardinality.STREAM_STREAM,
                _Request,
                _Response,
                timeout=10,
                metadata=dict(self._metadata),
            ) as stream:
                await stream.send_message(request, end=True)
                response = await stream.recv_message()
        except GRPCError as err:
            if _is_unknown_method(err):
                raise RpcError(
                    Status.FAILED_PRECONDITION,
                    "the server does not offer reflection (it runs with --no-reflection), so "
                    "its models cannot be learned: pass app= (or registry=) to BlazeClient.",
                ) from None
            raise RpcError(err.status, f"reflection failed: {err.message}") from None
        except (StreamTerminatedError, OSError, h2.exceptions.ProtocolError) as err:
            raise RpcError(Status.UNAVAILABLE, f"connection to the server failed: {err}") from None
        if response is None or response.HasField("error_response"):
            message = response.error_response.error_message if response else "no answer"
            raise RpcError(Status.NOT_FOUND, f"reflection: {message}")
        return response

    async def pool_for_symbol(self, symbol: str) -> descriptor_pool.DescriptorPool:
        response = await self.ask(_Request(file_containing_symbol=symbol))
        await self._keep(response.file_descriptor_response.file_descriptor_proto)
        pool = descriptor_pool.DescriptorPool()
        added: set[str] = set()
        for name in self._protos:
            self._add(pool, name, added)
        return pool

    async def _keep(self, serialized: Iterable[bytes]) -> None:
        for data in serialized:
            proto = descriptor_pb2.FileDescriptorProto.FromString(data)
            self._protos[proto.name] = proto
        for proto in list(self._protos.values()):
            for dependency in proto.dependency:
                if dependency not in self._protos:
                    response = await self.ask(_Request(file_by_filename=dependency))
                    await self._keep(response.file_descriptor_response.file_descriptor_proto)

    def _add(self, pool: descriptor_pool.DescriptorPool, name: str, added: set[str]) -> None:
        if name in added:
            return
        added.add(name)
        for dependency in self._protos[name].dependency:
            self._add(pool, dependency, added)
        pool.Add(self._protos[name])


def _is_unknown_method(err: GRPCError) -> bool:
    """UNIMPLEMENTED; grpclib's server answers an unknown path without a content-type, which
    grpclib's client reports as UNKNOWN before reading the status."""
    if err.status is Status.UNIMPLEMENTED:
        return True
    return err.status is Status.UNKNOWN and err.message == "Missing content-type header"


def _is_wrapper(message: Any) -> bool:
    """`DoubleList { repeated double items = 1; }`: a list or map inside a list or map."""
    return (
        len(message.fields) == 1
        and message.fields[0].name == "items"
        and message.name.endswith(("List", "Map"))
    )


def _read(message: Message) -> dict[str, Any]:
    values: dict[str, Any] = {}
    fields: Any = message.DESCRIPTOR.fields
    for field in fields:
        value = getattr(message, field.name)
        if field.has_presence and not message.HasField(field.name):
            values[field.name] = None
        elif _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            values[field.name] = {k: _read_value(v, value_field) for k, v in value.items()}
        elif field.is_repeated:
            values[field.name] = [_read_value(item, field) for item in value]
        else:
            values[field.name] = _read_value(value, field)
    return values


def _is_tensor(message: Any) -> bool:
    """blazerpc's Tensor message (`schema.typemap.TENSOR_SPEC`), known by its name and its
    fields' names and numbers: a numpy array."""
    return message.name == TENSOR_MESSAGE and [
        (field.name, field.number) for field in message.fields
    ] == [(field.name, field.number) for field in TENSOR_SPEC.fields]


def _read_value(value: Any, field: Any) -> Any:
    if field.type != _FieldDescriptor.TYPE_MESSAGE:
        return value
    if _is_tensor(field.message_type):
        return array_from(
            value.dtype, list(value.shape), value.data, Tensor(value.dtype), field.name
        )
    full_name = field.message_type.full_name
    if full_name == "google.protobuf.Timestamp":
        return value.ToDatetime(tzinfo=datetime.UTC)
    if full_name == "google.protobuf.Duration":
        return value.ToTimedelta()
    if _is_wrapper(field.message_type):
        return _read(value)["items"]
    return _read(value)


def _write(message: Message, values: Mapping[str, object], path: str) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        field = fields.get(name)
        where = f"{path}.{name}" if path else name
        if field is None:
            raise WireError(f"field {where!r} is not in {message.DESCRIPTOR.name}")
        if value is None:
            continue
        try:
            _write_field(message, field, value, where)
        except (TypeError, ValueError) as err:
            if isinstance(err, WireError):
                raise
            raise WireError(f"field {where!r}: {err}") from None


def _write_field(message: Message, field: Any, value: Any, where: str) -> None:
    target = getattr(message, field.name)
    if _is_map(field):
        value_field = field.message_type.fields_by_name["value"]
        for key, item in value.items():
            if value_field.type == _FieldDescriptor.TYPE_MESSAGE:
                _write_message(target[key], value_field, item, f"{where}[{key!r}]")
            else:
                target[key] = _scalar(item)
    elif field.is_repeated:
        for index, item in enumerate(value):
            if field.type == _FieldDescriptor.TYPE_MESSAGE:
                _write_message(target.add(), field, item, f"{where}[{index}]")
            else:
                target.append(_scalar(item))
    elif field.type == _FieldDescriptor.TYPE_MESSAGE:
        _write_message(target, field, value, where)
    else:
        setattr(message, field.name, _scalar(value))


def _write_message(target: Any, field: Any, value: Any, where: str) -> None:
    full_name = field.message_type.full_name
    if _is_tensor(field.message_type) and hasattr(value, "dtype"):
        target.dtype, shape, target.data = array_parts(value, Tensor(value.dtype.name), where)
        target.shape.extend(shape)
    elif full_name == "google.protobuf.Timestamp":
        target.FromDatetime(value)
    elif full_name == "google.protobuf.Duration":
        target.FromTimedelta(value)
    elif _is_wrapper(field.message_type):
        _write(target, {"items": value}, where)
    else:
        fields = value if isinstance(value, Mapping) else _as_fields(value)
        _write(target, fields, where)
        target.SetInParent()


def _as_fields(value: Any) -> Mapping[str, object]:
    """A Struct's or dataclass's fields, so typed objects can be sent as well as dicts."""
    names = getattr(value, "__struct_fields__", None) or getattr(
        value, "__dataclass_fields__", None
    )
    if names is None:
        raise TypeError(f"expected a dict of fields, got {type(value).__name__}")
    return {name: getattr(value, name) for name in names}


def _scalar(value: Any) -> Any:
    """Enum members go out as their number."""
    return value.value if hasattr(value, "value") and not isinstance(value, bool) else value


def _is_map(field: Any) -> bool:
    return bool(
        field.type == _FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry
    )
