"""A model as the Open Inference Protocol sees it: named, typed tensors in and out.

Read off the schema, like every other artefact:
- each request field is an input named after the parameter; each response is one output,
  `result`, unless the model returns a Struct or dataclass, whose fields are then its outputs;
- int -> INT64, float -> FP64, bool -> BOOL, str and bytes -> BYTES, an int enum -> INT64;
  a scalar has shape [1] and a list of them shape [-1] (any length);
- anything else (a Struct, a dict, a list of lists, a datetime) is one BYTES element holding
  its JSON, as msgspec writes it (and reads it back, validated).

Inputs are read from typed `contents` or from `raw_input_contents`, whichever the caller sent;
outputs go out as `raw_output_contents`, as Triton sends them. Every mismatch (datatype,
shape, element count, an unknown input, a missing one) is a WireError naming the input.
"""

from __future__ import annotations

import array
import copy
import enum
import math
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from blazerpc.codec import wire_error
from blazerpc.errors import ResultError, WireError
from blazerpc.schema import (
    RESULT_FIELD,
    EnumRef,
    FieldSpec,
    Label,
    MessageKind,
    MessageRef,
    ModelSpec,
    Scalar,
    ServiceSpec,
)

__all__ = ("TensorSpec", "ModelTensors", "tensors_of")

_LITTLE = sys.byteorder == "little"
_DATATYPES = {
    Scalar.INT64: "INT64",
    Scalar.DOUBLE: "FP64",
    Scalar.BOOL: "BOOL",
    Scalar.STRING: "BYTES",
    Scalar.BYTES: "BYTES",
}
_ARRAY_CODES = {"INT64": "q", "FP64": "d"}
_CONTENTS = {
    "INT64": "int64_contents",
    "FP64": "fp64_contents",
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
}
_LENGTH = struct.Struct("<I")
_JSON = msgspec.json.Encoder()


class Kind(enum.Enum):
    """How a value lies in its tensor."""

    SCALAR = "scalar"
    """One element, shape [1]."""
    LIST = "list"
    """A list of scalars, shape [n]."""
    JSON = "json"
    """One BYTES element holding the value's JSON."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One named input or output: its KServe datatype and shape, and how to read a value."""

    name: str
    datatype: str
    kind: Kind
    field: FieldSpec

    @property
    def shape(self) -> tuple[int, ...]:
        """The metadata shape: -1 where the length varies."""
        return (-1,) if self.kind is Kind.LIST else (1,)


@dataclass(frozen=True, slots=True)
class ModelTensors:
    """A model's inputs and outputs, and the conversions between them and Python values."""

    model: ModelSpec
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    splits_result: bool
    """The result is a Struct or dataclass whose fields are the outputs."""

    def read_inputs(self, tensors: Sequence[Any], raw: Sequence[bytes]) -> dict[str, Any]:
        """A request's input tensors -> the request message's fields, defaults applied."""
        if raw and len(raw) != len(tensors):
            raise WireError(
                f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs; send one "
                "per input, in the order of `inputs`, or send none and use `contents`."
            )
        values: dict[str, Any] = {}
        for index, tensor in enumerate(tensors):
            spec = self.inputs.get(tensor.name)
            if spec is None:
                raise WireError(
                    f"input {tensor.name!r} is not an input of model {self.model.name!r}; "
                    f"its inputs are: {', '.join(self.inputs) or 'none'}."
                )
            if spec.name in values:
                raise WireError(f"input {spec.name!r} is sent twice; send it once.")
            values[spec.name] = _read(spec, tensor, raw[index] if raw else None)
        for spec in self.inputs.values():
            if spec.name in values:
                continue
            field = spec.field
            if field.has_default:
                values[spec.name] = copy.copy(field.default)  # never shared between calls
            elif field.is_nullable:
                values[spec.name] = None
            elif field.label is not Label.SINGULAR:
                values[spec.name] = [] if field.label is Label.REPEATED else {}
            else:
                raise WireError(
                    f"input {spec.name!r} is required: send it as {spec.datatype} with shape "
                    f"{list(spec.shape)}."
                )
        return values

    def write_outputs(
        self, result: object, requested: Iterable[str] = ()
    ) -> list[tuple[str, str, list[int], bytes]]:
        """A result -> `(name, datatype, shape, raw bytes)` per output, in metadata order."""
        wanted = list(requested)
        for name in wanted:
            if name not in self.outputs:
                raise WireError(
                    f"output {name!r} is not an output of model {self.model.name!r}; its "
                    f"outputs are: {', '.join(self.outputs)}."
                )
        names = wanted or list(self.outputs)
        rows = []
        for name in names:
            spec = self.outputs[name]
            value = getattr(result, name) if self.splits_result else result
            shape, data = _write(spec, value)
            rows.append((name, spec.datatype, shape, data))
        return rows


def tensors_of(schema: ServiceSpec, model: ModelSpec) -> ModelTensors:
    """The model's tensors, read off its schema."""
    inputs = {field.name: _spec(field) for field in model.request.fields}
    if not model.response.fields:  # `-> None`: no outputs
        return ModelTensors(model, inputs, {}, splits_result=False)
    result = model.response.field_named(RESULT_FIELD)
    struct_spec = None
    if result.label is Label.SINGULAR and isinstance(result.value_type, MessageRef):
        message = schema.message(result.value_type.name)
        if message.kind is MessageKind.STRUCT and not result.is_nullable:
            struct_spec = message
    if struct_spec is not None:
        outputs = {field.name: _spec(field) for field in struct_spec.fields}
    else:
        outputs = {RESULT_FIELD: _spec(result)}
    return ModelTensors(model, inputs, outputs, splits_result=struct_spec is not None)


def _spec(field: FieldSpec) -> TensorSpec:
    value_type = field.value_type
    scalar = Scalar.INT64 if isinstance(value_type, EnumRef) else value_type
    if isinstance(scalar, Scalar) and field.label is Label.SINGULAR:
        return TensorSpec(field.name, _DATATYPES[scalar], Kind.SCALAR, field)
    if isinstance(scalar, Scalar) and field.label is Label.REPEATED:
        return TensorSpec(field.name, _DATATYPES[scalar], Kind.LIST, field)
    return TensorSpec(field.name, "BYTES", Kind.JSON, field)


def _read(spec: TensorSpec, tensor: Any, raw: bytes | None) -> Any:
    name = spec.name
    if tensor.datatype != spec.datatype:
        raise WireError(
            f"input {name!r} has datatype {tensor.datatype or '(none)'}; it takes {spec.datatype}."
        )
    shape = list(tensor.shape)
    if any(size < 0 for size in shape):
        raise WireError(f"input {name!r} has shape {shape}: sizes cannot be negative.")
    count = math.prod(shape)
    if spec.kind is Kind.LIST and len(shape) != 1:
        raise WireError(f"input {name!r} has shape {shape}; it takes a 1-D list, shape [n].")
    if spec.kind is not Kind.LIST and count != 1:
        raise WireError(f"input {name!r} has shape {shape}; it takes one element, shape [1].")
    elements = _elements(spec, tensor, raw)
    if len(elements) != count:
        raise WireError(
            f"input {name!r} has shape {shape}, which holds {count} elements, but "
            f"{len(elements)} were sent."
        )
    field = spec.field
    if spec.kind is Kind.JSON:
        try:
            return msgspec.json.decode(elements[0], type=field.annotation)
        except msgspec.ValidationError as err:
            raise wire_error(err, name) from None
        except msgspec.DecodeError as err:
            raise WireError(f"input {name!r} is not valid JSON ({err}).") from None
    if field.value_type is Scalar.STRING:
        elements = [_text(name, element) for element in elements]
    value = elements[0] if spec.kind is Kind.SCALAR else elements
    if field.needs_conversion:
        try:
            return msgspec.convert(value, field.annotation)
        except msgspec.ValidationError as err:
            raise wire_error(err, name) from None
    return value


def _elements(spec: TensorSpec, tensor: Any, raw: bytes | None) -> list[Any]:
    """The flat list of elements, from raw bytes or the typed contents field."""
    if raw is None:
        return list(getattr(tensor.contents, _CONTENTS[spec.datatype]))
    datatype = spec.datatype
    if datatype == "BYTES":
        return _split_bytes(spec.name, raw)
    if datatype == "BOOL":
        return [byte != 0 for byte in raw]
    code = _ARRAY_CODES[datatype]
    values = array.array(code)
    if len(raw) % values.itemsize:
        raise WireError(
            f"input {spec.name!r}: {len(raw)} raw bytes is not a whole number of "
            f"{values.itemsize}-byte {datatype} elements."
        )
    values.frombytes(raw)
    if not _LITTLE:
        values.byteswap()  # the protocol's raw contents are little-endian
    return values.tolist()


def _split_bytes(name: str, raw: bytes) -> list[bytes]:
    """BYTES raw contents: each element is a 4-byte little-endian length, then its bytes."""
    elements = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise WireError(f"input {name!r}: the raw BYTES end inside an element's length.")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise WireError(
                f"input {name!r}: a raw BYTES element declares {length} bytes, but only "
                f"{len(raw) - offset} follow."
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    return elements


def _text(name: str, element: bytes) -> str:
    try:
        return element.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"input {name!r} is not valid UTF-8 text.") from None


def _write(spec: TensorSpec, value: object) -> tuple[list[int], bytes]:
    """One output's shape and raw bytes; a value the schema does not allow is a ResultError."""
    if value is None:
        return [0], b""
    if spec.kind is Kind.JSON:
        try:
            return [1], _pack_bytes([_JSON.encode(value)])
        except TypeError as err:
            raise ResultError(f"output {spec.name!r} cannot be written as JSON ({err})") from None
    elements = [value] if spec.kind is Kind.SCALAR else value
    if not isinstance(elements, list | tuple):
        raise ResultError(f"output {spec.name!r}: expected a list, got {type(value).__name__}")
    try:
        return [len(elements)], _pack(spec, elements)
    except (TypeError, struct.error, OverflowError, AttributeError) as err:
        raise ResultError(
            f"output {spec.name!r}: cannot write {type(value).__name__} as {spec.datatype} ({err})"
        ) from None


def _pack(spec: TensorSpec, elements: Sequence[Any]) -> bytes:
    datatype = spec.datatype
    if datatype == "BYTES":
        if spec.field.value_type is Scalar.STRING:
            return _pack_bytes([_checked(str, e, spec).encode("utf-8") for e in elements])
        return _pack_bytes([bytes(_checked(bytes, e, spec)) for e in elements])
    if datatype == "BOOL":
        return bytes(bool(_checked(bool, e, spec)) for e in elements)
    converted = [e.value if isinstance(e, enum.Enum) else e for e in elements]
    if datatype == "INT64":
        for element in converted:
            if isinstance(element, bool) or not isinstance(element, int):
                raise TypeError(f"expected int, got {type(element).__name__}")
    values = array.array(_ARRAY_CODES[datatype], converted)
    if not _LITTLE:
        values.byteswap()
    return values.tobytes()


def _checked(kind: type, element: object, spec: TensorSpec) -> Any:
    if not isinstance(element, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(element).__name__}")
    return element


def _pack_bytes(elements: Iterable[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)
