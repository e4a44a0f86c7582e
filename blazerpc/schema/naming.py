"""The only place wire names are made: rpcs, messages, enum values, paths and JSON names.

They follow the BlazeRPC convention: model `text-embed` is
`rpc PredictTextEmbed(TextEmbedRequest) returns (TextEmbedResponse)`; golden files pin them.
"""

from __future__ import annotations

import re

__all__ = (
    "RESULT_FIELD",
    "TENSOR_MESSAGE",
    "enum_value_name",
    "is_model_name",
    "is_package_name",
    "is_wire_identifier",
    "json_name",
    "map_entry_name",
    "proto_file_name",
    "qualified_name",
    "request_name",
    "response_name",
    "rpc_name",
    "rpc_path",
    "wire_stem",
    "wrapper_name",
)

RESULT_FIELD = "result"
"""The response field that carries a model's return value (or one streamed item)."""
TENSOR_MESSAGE = "Tensor"
"""The message a numpy array travels in on the typed service: dtype, shape, raw bytes."""

_MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGE = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*")


def wire_stem(model_name: str) -> str:
    """The CamelCase stem of a model's wire names: `text-embed` -> `TextEmbed`."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_.]", model_name))


def rpc_name(model_name: str) -> str:
    """`generate` -> `PredictGenerate`."""
    return f"Predict{wire_stem(model_name)}"


def request_name(model_name: str) -> str:
    """`text-embed` -> `TextEmbedRequest`."""
    return f"{wire_stem(model_name)}Request"


def response_name(model_name: str) -> str:
    """`text-embed` -> `TextEmbedResponse`."""
    return f"{wire_stem(model_name)}Response"


def wrapper_name(value_type: str, key_type: str | None = None) -> str:
    """The message wrapping a nested list or map: `DoubleList`, `StringInt64Map`.

    The types are spelled as the .proto spells them: `double`, `google.protobuf.Timestamp`.
    """
    if key_type is not None:
        return f"{_type_word(key_type)}{_type_word(value_type)}Map"
    return f"{_type_word(value_type)}List"


def enum_value_name(enum_name: str, member: str) -> str:
    """`Color.DARK_RED` -> `COLOR_DARK_RED`: enum values share the package's scope."""
    prefix = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", enum_name).upper()
    return f"{prefix}_{member.upper()}"


def map_entry_name(field_name: str) -> str:
    """The nested message protoc synthesises for `map<K, V> field_name`: `FieldNameEntry`."""
    camel = json_name(field_name)
    return f"{camel[:1].upper()}{camel[1:]}Entry"


def _type_word(proto_type: str) -> str:
    """`int64` -> `Int64`, `google.protobuf.Timestamp` -> `Timestamp`, `Box` -> `Box`."""
    last = proto_type.rsplit(".", 1)[-1]
    return last[:1].upper() + last[1:]


def is_model_name(name: str) -> bool:
    """A model name becomes an rpc name: ASCII letters and digits, joined by `-`, `_` or `.`."""
    return _MODEL_NAME.fullmatch(name) is not None


def is_wire_identifier(name: str) -> bool:
    """Protobuf identifiers are ASCII: a Python name like `größe` cannot be a field name."""
    return _IDENTIFIER.fullmatch(name) is not None


def is_package_name(name: str) -> bool:
    """A proto package: lower-case ASCII words joined by dots."""
    return _PACKAGE.fullmatch(name) is not None


def json_name(field_name: str) -> str:
    """The proto3 JSON name protoc derives: `max_tokens` -> `maxTokens`."""
    head, *rest = field_name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def qualified_name(package: str, name: str) -> str:
    """`blazerpc.InferenceService`: a service, message or enum's full name on the wire."""
    return f"{package}.{name}"


def proto_file_name(package: str) -> str:
    """The path protoc knows a schema by: `blazerpc.proto`, `acme/vision.proto`."""
    return package.replace(".", "/") + ".proto"


def rpc_path(service_full_name: str, rpc: str) -> str:
    """The HTTP/2 path of an rpc: `/blazerpc.InferenceService/PredictGenerate`."""
    return f"/{service_full_name}/{rpc}"
