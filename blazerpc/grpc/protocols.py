"""The standard protocols blazerpc serves, as message classes in a private pool.

gRPC health and reflection are built here field by field; a protocol compiled ahead of time
(the Open Inference Protocol: see openinference/protos) is loaded by `compiled_protocol`.

grpclib ships these protocols too, but its generated modules register `grpc.health.v1` and
`grpc.reflection.*` in protobuf's default pool under grpclib's own file names, so importing
them next to grpcio-health-checking or grpcio-reflection fails with "duplicate symbol". Ours
live in a pool of their own, under the upstream file names, and clash with nothing.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from blazerpc.schema.naming import json_name

__all__ = ("HEALTH", "REFLECTION_V1", "REFLECTION_V1ALPHA", "Protocol", "compiled_protocol")

_Field = descriptor_pb2.FieldDescriptorProto
_STRING, _BYTES, _INT32, _ENUM, _MESSAGE = (
    _Field.TYPE_STRING,
    _Field.TYPE_BYTES,
    _Field.TYPE_INT32,
    _Field.TYPE_ENUM,
    _Field.TYPE_MESSAGE,
)
_REPEATED = _Field.LABEL_REPEATED
FieldRow = tuple[str, int, "_Field.Type.ValueType", str, bool, int | None]
"""name, number, type, message or enum type name, is_repeated, oneof index."""


@dataclass(frozen=True, slots=True)
class Protocol:
    """One protocol's file: its descriptor, and a class per message, by short name."""

    file: descriptor.FileDescriptor
    classes: dict[str, type[Message]]
    service: str


def _field(row: FieldRow, package: str) -> _Field:
    name, number, kind, type_name, is_repeated, oneof = row
    field = _Field(
        name=name,
        number=number,
        type=kind,
        label=_REPEATED if is_repeated else _Field.LABEL_OPTIONAL,
        json_name=json_name(name),
    )
    if type_name:
        field.type_name = f".{package}.{type_name}"
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _reflection_file(package: str, path: str) -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=path, package=package, syntax="proto3")
    messages: dict[str, tuple[list[FieldRow], list[str]]] = {
        "ServerReflectionRequest": (
            [
                ("host", 1, _STRING, "", False, None),
                ("file_by_filename", 3, _STRING, "", False, 0),
                ("file_containing_symbol", 4, _STRING, "", False, 0),
                ("file_containing_extension", 5, _MESSAGE, "ExtensionRequest", False, 0),
                ("all_extension_numbers_of_type", 6, _STRING, "", False, 0),
                ("list_services", 7, _STRING, "", False, 0),
            ],
            ["message_request"],
        ),
        "ExtensionRequest": (
            [
                ("containing_type", 1, _STRING, "", False, None),
                ("extension_number", 2, _INT32, "", False, None),
            ],
            [],
        ),
        "ServerReflectionResponse": (
            [
                ("valid_host", 1, _STRING, "", False, None),
                ("original_request", 2, _MESSAGE, "ServerReflectionRequest", False, None),
                ("file_descriptor_response", 4, _MESSAGE, "FileDescriptorResponse", False, 0),
                (
                    "all_extension_numbers_response",
                    5,
                    _MESSAGE,
                    "ExtensionNumberResponse",
                    False,
                    0,
                ),
                ("list_services_response", 6, _MESSAGE, "ListServiceResponse", False, 0),
                ("error_response", 7, _MESSAGE, "ErrorResponse", False, 0),
            ],
            ["message_response"],
        ),
        "FileDescriptorResponse": ([("file_descriptor_proto", 1, _BYTES, "", True, None)], []),
        "ExtensionNumberResponse": (
            [
                ("base_type_name", 1, _STRING, "", False, None),
                ("extension_number", 2, _INT32, "", True, None),
            ],
            [],
        ),
        "ListServiceResponse": ([("service", 1, _MESSAGE, "ServiceResponse", True, None)], []),
        "ServiceResponse": ([("name", 1, _STRING, "", False, None)], []),
        "ErrorResponse": (
            [
                ("error_code", 1, _INT32, "", False, None),
                ("error_message", 2, _STRING, "", False, None),
            ],
            [],
        ),
    }
    for name, (fields, oneofs) in messages.items():
        message = file.message_type.add(name=name)
        message.field.extend(_field(row, package) for row in fields)
        message.oneof_decl.extend(descriptor_pb2.OneofDescriptorProto(name=o) for o in oneofs)
    file.service.add(name="ServerReflection").method.add(
        name="ServerReflectionInfo",
        input_type=f".{package}.ServerReflectionRequest",
        output_type=f".{package}.ServerReflectionResponse",
        client_streaming=True,
        server_streaming=True,
    )
    return file


def _health_file() -> descriptor_pb2.FileDescriptorProto:
    package = "grpc.health.v1"
    file = descriptor_pb2.FileDescriptorProto(
        name="grpc/health/v1/health.proto", package=package, syntax="proto3"
    )
    request = file.message_type.add(name="HealthCheckRequest")
    request.field.append(_field(("service", 1, _STRING, "", False, None), package))
    response = file.message_type.add(name="HealthCheckResponse")
    status_type = "HealthCheckResponse.ServingStatus"
    response.field.append(_field(("status", 1, _ENUM, status_type, False, None), package))
    response.enum_type.add(name="ServingStatus").value.extend(
        descriptor_pb2.EnumValueDescriptorProto(name=name, number=number)
        for number, name in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"))
    )
    service = file.service.add(name="Health")
    for name, is_streaming in (("Check", False), ("Watch", True)):
        method = service.method.add(
            name=name,
            input_type=f".{package}.HealthCheckRequest",
            output_type=f".{package}.HealthCheckResponse",
        )
        if is_streaming:
            method.server_streaming = True
    return file


def compiled_protocol(package: str, name: str) -> Protocol:
    """The protocol in descriptor set `name`, a resource of `package` compiled ahead of time."""
    data = (importlib.resources.files(package) / name).read_bytes()
    (file,) = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return _protocol(_POOL, file)


def _protocol(
    pool: descriptor_pool.DescriptorPool, proto: descriptor_pb2.FileDescriptorProto
) -> Protocol:
    pool.Add(proto)
    file = pool.FindFileByName(proto.name)
    classes = {
        name: message_factory.GetMessageClass(message)
        for name, message in file.message_types_by_name.items()
    }
    (service,) = file.services_by_name.values()
    return Protocol(file, classes, service.full_name)


_POOL = descriptor_pool.DescriptorPool()
HEALTH = _protocol(_POOL, _health_file())
REFLECTION_V1 = _protocol(
    _POOL, _reflection_file("grpc.reflection.v1", "grpc/reflection/v1/reflection.proto")
)
REFLECTION_V1ALPHA = _protocol(
    _POOL,
    _reflection_file("grpc.reflection.v1alpha", "grpc/reflection/v1alpha/reflection.proto"),
)
