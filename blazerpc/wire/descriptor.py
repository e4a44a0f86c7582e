"""Schema -> `FileDescriptorProto`: the binary twin of the `.proto` text, built without protoc.

The codec and reflection are built from it; a test compiles the `.proto` text with protoc and
checks that protoc's descriptor equals this one, so the two cannot drift apart.
"""

from __future__ import annotations

from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, duration_pb2, timestamp_pb2

from blazerpc.schema.naming import json_name, map_entry_name
from blazerpc.schema.spec import (
    EnumRef,
    EnumSpec,
    FieldSpec,
    Label,
    MessageRef,
    MessageSpec,
    Scalar,
    ServiceSpec,
    ValueType,
)

__all__ = ("file_descriptor", "schema_pool")

_Field = descriptor_pb2.FieldDescriptorProto

_SCALAR_TYPES = {
    Scalar.INT64: _Field.TYPE_INT64,
    Scalar.DOUBLE: _Field.TYPE_DOUBLE,
    Scalar.BOOL: _Field.TYPE_BOOL,
    Scalar.STRING: _Field.TYPE_STRING,
    Scalar.BYTES: _Field.TYPE_BYTES,
}


_WELL_KNOWN_FILES = {
    "google/protobuf/timestamp.proto": timestamp_pb2.DESCRIPTOR,
    "google/protobuf/duration.proto": duration_pb2.DESCRIPTOR,
}


def schema_pool(
    schema: ServiceSpec, extra_files: tuple[descriptor.FileDescriptor, ...] = ()
) -> descriptor_pool.DescriptorPool:
    """A private pool holding the schema's file, the files it imports, and `extra_files`.

    Private, so two apps with the same package never clash in protobuf's default pool.
    """
    pool = descriptor_pool.DescriptorPool()
    for file in (*(_WELL_KNOWN_FILES[path] for path in schema.imports), *extra_files):
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb))
    pool.Add(file_descriptor(schema))
    return pool


def file_descriptor(schema: ServiceSpec) -> descriptor_pb2.FileDescriptorProto:
    """The descriptor protoc would produce from `render_proto(schema)`."""
    proto = descriptor_pb2.FileDescriptorProto(
        name=schema.file_name,
        package=schema.package,
        dependency=list(schema.imports),
        syntax="proto3",
    )
    for message in schema.messages:
        proto.message_type.append(_message(message, schema.package))
    for spec in schema.enums:
        proto.enum_type.append(_enum(spec))
    service = proto.service.add(name=schema.name)
    for model in schema.models:
        method = service.method.add(
            name=model.rpc_name,
            input_type=f".{schema.package}.{model.request.name}",
            output_type=f".{schema.package}.{model.response.name}",
        )
        if model.shape.is_client_streaming:  # protoc leaves false flags unset
            method.client_streaming = True
        if model.shape.is_server_streaming:
            method.server_streaming = True
    return proto


def _message(message: MessageSpec, package: str) -> descriptor_pb2.DescriptorProto:
    proto = descriptor_pb2.DescriptorProto(name=message.name)
    for number in message.reserved_numbers:  # protoc makes one range per listed number
        proto.reserved_range.add(start=number, end=number + 1)
    proto.reserved_name.extend(message.reserved_names)
    for spec in message.fields:
        field = proto.field.add(
            name=spec.name,
            number=spec.number,
            json_name=json_name(spec.name),
            label=_Field.LABEL_OPTIONAL if spec.label is Label.SINGULAR else _Field.LABEL_REPEATED,
        )
        if spec.label is Label.MAP:
            entry = _map_entry(spec, package)
            proto.nested_type.append(entry)
            field.type = _Field.TYPE_MESSAGE
            field.type_name = f".{package}.{message.name}.{entry.name}"
        else:
            _set_type(field, spec.value_type, package)
        if spec.is_proto3_optional:
            field.proto3_optional = True
            field.oneof_index = len(proto.oneof_decl)
            proto.oneof_decl.add(name=f"_{spec.name}")
    return proto


def _map_entry(spec: FieldSpec, package: str) -> descriptor_pb2.DescriptorProto:
    """The nested `XxxEntry` message protoc synthesises for `map<K, V> xxx`."""
    entry = descriptor_pb2.DescriptorProto(name=map_entry_name(spec.name))
    entry.options.map_entry = True
    key_type = spec.key_type or Scalar.STRING
    entry.field.add(
        name="key",
        number=1,
        json_name="key",
        label=_Field.LABEL_OPTIONAL,
        type=_SCALAR_TYPES[key_type],
    )
    value = entry.field.add(name="value", number=2, json_name="value", label=_Field.LABEL_OPTIONAL)
    _set_type(value, spec.value_type, package)
    return entry


def _set_type(
    field: descriptor_pb2.FieldDescriptorProto, value_type: ValueType, package: str
) -> None:
    if isinstance(value_type, Scalar):
        field.type = _SCALAR_TYPES[value_type]
    elif isinstance(value_type, EnumRef):
        field.type = _Field.TYPE_ENUM
        field.type_name = f".{package}.{value_type.name}"
    elif isinstance(value_type, MessageRef):
        field.type = _Field.TYPE_MESSAGE
        field.type_name = f".{package}.{value_type.name}"
    else:
        field.type = _Field.TYPE_MESSAGE
        field.type_name = f".{value_type.value}"


def _enum(spec: EnumSpec) -> descriptor_pb2.EnumDescriptorProto:
    proto = descriptor_pb2.EnumDescriptorProto(name=spec.name)
    for value in spec.values:
        proto.value.add(name=value.name, number=value.number)
    return proto
