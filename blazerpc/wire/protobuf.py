"""Bytes <-> Python values, through protobuf (upb) classes built from our own descriptor.

upb parses strictly (truncated varints, bad UTF-8 and overlong lengths are errors) and costs
about a microsecond per small message; see bench/. On top of it this module adds what protobuf
cannot say: required fields, Python defaults, enums, Structs and constraints (through
msgspec.convert), and a field of the right number but the wrong wire type, which protobuf would
silently keep as an unknown field. Every failure is a WireError naming the field path.
"""

from __future__ import annotations

import datetime
import enum
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from google.protobuf import (
    message_factory,
    unknown_fields,
)
from google.protobuf.message import DecodeError, Message

from blazerpc.errors import WireError
from blazerpc.schema.pydantic_models import decode_hook
from blazerpc.schema.spec import (
    NO_DEFAULT,
    EnumRef,
    FieldSpec,
    Label,
    MessageKind,
    MessageSpec,
    ModelSpec,
    Scalar,
    ServiceSpec,
    WellKnown,
)
from blazerpc.wire.arrays import array_from, array_parts
from blazerpc.wire.descriptor import schema_pool

__all__ = ("MessageCodec", "ModelCodec", "SchemaCodec", "wire_error")

_MISSING: Any = object()
_WIRE_TYPE_NAMES = {
    0: "a varint",
    1: "a 64-bit value",
    2: "a length-delimited value",
    5: "a 32-bit value",
}


class SchemaCodec:
    """The wire classes of one schema, built once at start-up, and a codec per model."""

    def __init__(self, schema: ServiceSpec) -> None:
        pool = schema_pool(schema)
        self.classes: dict[str, type[Message]] = {
            spec.name: message_factory.GetMessageClass(
                pool.FindMessageTypeByName(f"{schema.package}.{spec.name}")
            )
            for spec in schema.messages
        }
        self._specs = {spec.name: spec for spec in schema.messages}
        self._codecs: dict[str, MessageCodec] = {}
        self.models = {model.name: self._model(model) for model in schema.models}

    def _model(self, model: ModelSpec) -> ModelCodec:
        return ModelCodec(self._message(model.request.name), self._message(model.response.name))

    def _message(self, name: str) -> MessageCodec:
        if name not in self._codecs:
            self._codecs[name] = MessageCodec(self._specs[name], self.classes[name], self)
        return self._codecs[name]


@dataclass(frozen=True, slots=True)
class ModelCodec:
    """The two messages of one model's rpc."""

    request: MessageCodec
    response: MessageCodec


class MessageCodec:
    """One message: bytes -> {field: Python value} and back, strictly."""

    def __init__(self, spec: MessageSpec, cls: type[Message], codecs: SchemaCodec) -> None:
        self.spec = spec
        self.cls = cls
        self._codecs = codecs
        self._fields = spec.fields
        self._numbers = {f.number: f for f in spec.fields}
        # Nested messages stay plain data: the top-level field's msgspec.convert builds the
        # Structs, enums and checks constraints in one pass, with the full field path.
        self._is_top_level = spec.kind in (MessageKind.REQUEST, MessageKind.RESPONSE)
        self._plan = [
            (f, f.name, _how_to_read(f), self._is_top_level and f.needs_conversion)
            for f in spec.fields
        ]
        self._is_flat = all(
            f.label is Label.SINGULAR and isinstance(f.value_type, Scalar) for f in spec.fields
        )

    def decode(self, data: bytes, path: str = "") -> dict[str, Any]:
        """The fields' Python values; a missing field takes its default or raises WireError."""
        try:
            message = self.cls.FromString(data)
        except DecodeError as err:
            raise WireError(
                f"the request is not a valid {self.spec.name} message ({_reason(err)}). "
                "Send bytes serialized from the schema `blaze proto` prints."
            ) from None
        return self.read(message, path)

    def read(self, message: Message, path: str = "") -> dict[str, Any]:
        """Like decode, from a parsed message (nested messages come this way)."""
        self._check_wire_types(message, path)
        values: dict[str, Any] = {}
        for spec, name, how, convert in self._plan:
            if how is _SCALAR:
                value = getattr(message, name)
            elif how is _SCALAR_WITH_PRESENCE:
                value = getattr(message, name) if message.HasField(name) else _MISSING
            else:
                value = self._read_field(message, spec, path)
                if how is _CONTAINER_WITH_DEFAULT and not value:
                    value = _MISSING  # protobuf cannot tell empty from left out
            if value is _MISSING:
                if not self._is_top_level and (spec.has_default or spec.is_required):
                    # the class applies its own default (pydantic runs a factory per call),
                    # and msgspec reports a required field left out, with its path
                    continue
                value = spec.missing_value()
                if value is NO_DEFAULT:
                    raise WireError(
                        f"field '{_join(path, name)}' is required: set "
                        f"{self.spec.name}.{name} (field {spec.number})."
                    )
            elif convert:
                value = _convert(value, spec.annotation, _join(path, name))
            values[name] = value
        return values

    def encode(self, values: Mapping[str, object]) -> bytes:
        """Serialize the given fields; a value of the wrong type raises WireError naming it."""
        if self._is_flat and None not in values.values():
            try:  # the common case (a token, a number): upb's constructor checks the types
                return self.cls(**values).SerializeToString()
            except (TypeError, ValueError):
                pass  # let the field-by-field path below name the culprit
        message = self.cls()
        self.write(message, values, "")
        return message.SerializeToString()

    def write(self, message: Message, values: Mapping[str, object], path: str) -> None:
        """Set the fields of a message being built; `path` names it in errors."""
        for spec in self._fields:
            value = values.get(spec.name, _MISSING)
            if value is _MISSING:
                continue
            if value is None:
                if spec.is_nullable or spec.has_default:
                    continue  # sent as "left out": the receiver applies None or the default
                raise WireError(
                    f"field '{_join(path, spec.name)}': expected {spec.type_spelling}, got None"
                )
            try:
                self._write_field(message, spec, value, _join(path, spec.name))
            except (TypeError, ValueError, AttributeError) as err:
                if isinstance(err, WireError):
                    raise
                raise WireError(
                    f"field '{_join(path, spec.name)}': {_describe_write_error(spec, value, err)}"
                ) from None

    def _check_wire_types(self, message: Message, path: str) -> None:
        """A known field number with the wrong wire type is an error, not an unknown field."""
        unknown_set = unknown_fields.UnknownFieldSet(message)
        for index in range(len(unknown_set)):
            unknown = unknown_set[index]
            spec = self._numbers.get(unknown.field_number)
            if spec is not None:
                raise WireError(
                    f"field '{_join(path, spec.name)}': expected {spec.type_spelling}, got "
                    f"{_WIRE_TYPE_NAMES.get(unknown.wire_type, f'wire type {unknown.wire_type}')}."
                )

    def _read_field(self, message: Message, spec: FieldSpec, path: str) -> Any:
        name = spec.name
        if spec.label is Label.REPEATED:
            return [
                self._read_value(item, spec, f"{_join(path, name)}[{i}]")
                for i, item in enumerate(getattr(message, name))
            ]
        if spec.label is Label.MAP:
            container = getattr(message, name)
            return {
                key: self._read_value(container[key], spec, f"{_join(path, name)}[{key!r}]")
                for key in container
            }
        if (
            spec.tracks_presence or not isinstance(spec.value_type, Scalar)
        ) and not message.HasField(name):
            return _MISSING
        return self._read_value(getattr(message, name), spec, _join(path, name))

    def _read_value(self, value: Any, spec: FieldSpec, path: str) -> Any:
        value_type = spec.value_type
        if isinstance(value_type, Scalar | EnumRef):
            return value
        try:
            if value_type is WellKnown.TIMESTAMP:
                naive = ("tz", False) in spec.constraints  # Meta(tz=False) wants naive UTC
                return value.ToDatetime() if naive else value.ToDatetime(tzinfo=datetime.UTC)
            if value_type is WellKnown.DURATION:
                return value.ToTimedelta()
        except (ValueError, OverflowError) as err:
            raise WireError(f"field '{path}': {err}") from None
        nested = self._codecs._message(value_type.name)
        if nested.spec.kind is MessageKind.TENSOR and spec.tensor is not None:
            return array_from(
                value.dtype, list(value.shape), value.data, spec.tensor, f"field '{path}'"
            )
        fields = nested.read(value, path)
        if nested.spec.kind is MessageKind.WRAPPER:
            return fields["items"]
        return fields

    def _write_field(self, message: Message, spec: FieldSpec, value: object, path: str) -> None:
        name = spec.name
        if spec.label is Label.REPEATED:
            container = getattr(message, name)
            if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple):
                raise TypeError(f"expected a list, got {type(value).__name__}")
            if isinstance(spec.value_type, Scalar | EnumRef):
                container.extend(
                    [_enum_number(v) for v in value]
                    if isinstance(spec.value_type, EnumRef)
                    else value
                )
            else:
                for i, item in enumerate(value):
                    self._write_message(container.add(), spec, item, f"{path}[{i}]")
        elif spec.label is Label.MAP:
            if not isinstance(value, Mapping):
                raise TypeError(f"expected a dict, got {type(value).__name__}")
            container = getattr(message, name)
            for key, item in value.items():
                if isinstance(spec.value_type, Scalar | EnumRef):
                    container[key] = _enum_number(item)
                else:
                    self._write_message(container[key], spec, item, f"{path}[{key!r}]")
        elif isinstance(spec.value_type, Scalar | EnumRef):
            setattr(message, name, _enum_number(value))
        else:
            self._write_message(getattr(message, name), spec, value, path)

    def _write_message(self, target: Any, spec: FieldSpec, value: object, path: str) -> None:
        value_type = spec.value_type
        if value_type is WellKnown.TIMESTAMP:
            if not isinstance(value, datetime.datetime):
                raise WireError(f"field '{path}': expected a datetime, got {type(value).__name__}")
            target.FromDatetime(value)
            return
        if value_type is WellKnown.DURATION:
            if not isinstance(value, datetime.timedelta):
                raise WireError(f"field '{path}': expected a timedelta, got {type(value).__name__}")
            target.FromTimedelta(value)
            return
        nested = self._codecs._message(value_type.name)
        if nested.spec.kind is MessageKind.TENSOR and spec.tensor is not None:
            target.dtype, shape, target.data = array_parts(value, spec.tensor, f"field '{path}'")
            target.shape.extend(shape)
            return
        if nested.spec.kind is MessageKind.WRAPPER:
            nested.write(target, {"items": value}, path)
            target.SetInParent()
            return
        expected = nested.spec.python_type
        if expected is not None and typing.is_typeddict(expected):
            if not isinstance(value, dict):
                raise WireError(
                    f"field '{path}': expected a {expected.__name__} dict, got "
                    f"{type(value).__name__}"
                )
            fields = {f.name: value.get(f.name) for f in nested.spec.fields}
        elif expected is not None and not isinstance(value, expected):
            raise WireError(
                f"field '{path}': expected {expected.__name__}, got {type(value).__name__}"
            )
        else:
            fields = {f.name: getattr(value, f.name) for f in nested.spec.fields}
        nested.write(target, fields, path)
        target.SetInParent()


_SCALAR, _SCALAR_WITH_PRESENCE, _CONTAINER_WITH_DEFAULT, _OTHER = "scalar", "presence", "cd", "o"


def _how_to_read(spec: FieldSpec) -> str:
    """The cheapest way to read a field, chosen once: most fields are one plain scalar."""
    if spec.label is Label.SINGULAR and isinstance(spec.value_type, Scalar | EnumRef):
        return _SCALAR_WITH_PRESENCE if spec.tracks_presence else _SCALAR
    if spec.label is not Label.SINGULAR and spec.has_default:
        return _CONTAINER_WITH_DEFAULT
    return _OTHER


def _convert(value: object, annotation: object, path: str) -> Any:
    try:
        return msgspec.convert(value, annotation, dec_hook=decode_hook)
    except msgspec.ValidationError as err:
        raise wire_error(err, path) from None


def wire_error(err: msgspec.ValidationError, path: str) -> WireError:
    """msgspec's complaint as a WireError naming the field path: `field 'a.b': expected ...`."""
    # A nested pydantic model's complaint carries its own path first: "... - at `$.y` - at `$[0]`"
    detail, *steps = str(err).split(" - at `$")
    where = path + "".join(step.removesuffix("`") for step in reversed(steps))
    where = where.removeprefix(".")
    if detail.startswith("Object missing required field `"):
        missing = detail.removeprefix("Object missing required field `").rstrip("`")
        return WireError(f"field '{_join(where, missing)}' is required.")
    if detail.startswith("Object contains unknown field `"):
        unknown = detail.removeprefix("Object contains unknown field `").rstrip("`")
        return WireError(
            f"field '{_join(where, unknown)}' is not in the schema; check its spelling "
            "against `blaze proto` or GET /models."
        )
    detail = detail.replace("`", "")
    what = f"field '{where}'" if where else "the request"
    return WireError(f"{what}: {detail[:1].lower()}{detail[1:]}.")


def _enum_number(value: object) -> object:
    """Enum members go on the wire as their numbers."""
    return value.value if isinstance(value, enum.Enum) else value


def _describe_write_error(spec: FieldSpec, value: object, err: Exception) -> str:
    return (
        f"cannot send {type(value).__name__} {_short_repr(value)} as {spec.type_spelling} ({err})"
    )


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _reason(err: DecodeError) -> str:
    text = str(err)
    return text.rsplit(": ", 1)[-1] if ": " in text else text
