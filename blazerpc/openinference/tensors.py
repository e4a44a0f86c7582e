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
import enum
import math
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from blazerpc.errors import ResultError, WireError
from blazerpc.schema.naming import RESULT_FIELD
from blazerpc.schema.pydantic_models import decode_hook, encode_hook
from blazerpc.schema.spec import (
    NO_DEFAULT,
    EnumRef,
    FieldSpec,
    Label,
    MessageKind,
    MessageRef,
    ModelSpec,
    Scalar,
    ServiceSpec,
)
from blazerpc.wire.arrays import array_from, array_parts, check_array
from blazerpc.wire.protobuf import wire_error

__all__ = ("ModelTensors", "TensorSpec", "tensors_by_model", "tensors_of")

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
_ARRAY_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "INT64": int,
    "FP64": (int, float),
    "BOOL": bool,
}
_JSON = msgspec.json.Encoder(enc_hook=encode_hook)


class Kind(enum.Enum):
    """How a value lies in its tensor."""

    SCALAR = "scalar"
    """One element, shape [1]."""
    LIST = "list"
    """A list of scalars, shape [n]."""
    JSON = "json"
    """One BYTES element holding the value's JSON."""
    ARRAY = "array"
    """A numpy array (`Tensor`): any datatype, its own shape, read without copying."""


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
        tensor = self.field.tensor
        if tensor is not None:
            return tensor.shape if tensor.shape is not None else (-1,)
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
            spec = self._input(tensor.name, values)
            values[spec.name] = _read(spec, tensor, raw[index] if raw else None)
        return self._with_defaults(values)

    def read_json_inputs(
        self, tensors: Sequence[Mapping[str, Any]], binary: Mapping[str, bytes]
    ) -> dict[str, Any]:
        """The `inputs` of a REST inference request (KServe v2 JSON) -> the fields.

        `binary` holds the inputs sent with the binary data extension, as raw contents.
        """
        values: dict[str, Any] = {}
        for tensor in tensors:
            spec = self._input(str(tensor.get("name")), values)
            raw = binary.get(spec.name)
            if raw is None:
                values[spec.name] = _read_json(spec, tensor)
            else:
                shape = _checked_shape(spec, tensor.get("datatype", ""), tensor.get("shape"))
                values[spec.name] = (
                    _array(spec, shape, raw)
                    if spec.kind is Kind.ARRAY
                    else _value(spec, shape, _raw_elements(spec, raw))
                )
        return self._with_defaults(values)

    def write_json_outputs(self, result: object, requested: Iterable[str] = ()) -> list[Any]:
        """A result -> the `outputs` of a REST inference response: flat data, row-major."""
        return [
            {"name": name, "datatype": datatype, "shape": shape, "data": _json_data(name, data)}
            for name, datatype, shape, data in self._values(result, requested)
        ]

    def named_outputs(self, result: object, requested: Iterable[str] = ()) -> dict[str, Any]:
        """A result -> `{output name: Python value}`, checked as the tensors are."""
        return {name: value for name, _, _, (_, value) in self._values(result, requested)}

    def _input(self, name: str, seen: Mapping[str, Any]) -> TensorSpec:
        spec = self.inputs.get(name)
        if spec is None:
            raise WireError(
                f"input {name!r} is not an input of model {self.model.name!r}; "
                f"its inputs are: {', '.join(self.inputs) or 'none'}."
            )
        if name in seen:
            raise WireError(f"input {name!r} is sent twice; send it once.")
        return spec

    def _with_defaults(self, values: dict[str, Any]) -> dict[str, Any]:
        for spec in self.inputs.values():
            if spec.name in values:
                continue
            value = spec.field.missing_value()
            if value is NO_DEFAULT:
                raise WireError(
                    f"input {spec.name!r} is required: send it as {spec.datatype} with shape "
                    f"{list(spec.shape)}."
                )
            values[spec.name] = value
        return values

    def write_outputs(
        self, result: object, requested: Iterable[str] = ()
    ) -> list[tuple[str, str, list[int], bytes]]:
        """A result -> `(name, datatype, shape, raw bytes)` per output, in metadata order."""
        return [
            (name, spec.datatype, *_write(spec, value))
            for name, spec, value in self._chosen(result, requested)
        ]

    def _values(
        self, result: object, requested: Iterable[str]
    ) -> list[tuple[str, str, list[int], Any]]:
        """`(name, datatype, shape, Python value)` per output, for JSON."""
        rows = []
        for name, spec, value in self._chosen(result, requested):
            tensor = spec.field.tensor
            if tensor is not None and value is not None:  # checked without copying its bytes
                try:
                    shape = list(check_array(value, tensor, f"output {name!r}").shape)
                except WireError as err:
                    raise ResultError(str(err)) from None
            else:
                shape, _ = _write(spec, value)  # the same checks as the binary path
            rows.append((name, spec.datatype, shape, (spec, value)))
        return rows

    def _chosen(
        self, result: object, requested: Iterable[str]
    ) -> list[tuple[str, TensorSpec, Any]]:
        wanted = list(requested)
        for name in wanted:
            if name not in self.outputs:
                raise WireError(
                    f"output {name!r} is not an output of model {self.model.name!r}; its "
                    f"outputs are: {', '.join(self.outputs)}."
                )
        return [
            (name, self.outputs[name], _part(result, name) if self.splits_result else result)
            for name in wanted or list(self.outputs)
        ]


def tensors_by_model(schema: ServiceSpec) -> dict[str, ModelTensors]:
    """Every model's tensors, built once per server for the gRPC and the REST side alike."""
    return {model.name: tensors_of(schema, model) for model in schema.models}


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
    if field.tensor is not None:
        return TensorSpec(field.name, field.tensor.datatype, Kind.ARRAY, field)
    value_type = field.value_type
    scalar = Scalar.INT64 if isinstance(value_type, EnumRef) else value_type
    if isinstance(scalar, Scalar) and field.label is Label.SINGULAR:
        return TensorSpec(field.name, _DATATYPES[scalar], Kind.SCALAR, field)
    if isinstance(scalar, Scalar) and field.label is Label.REPEATED:
        return TensorSpec(field.name, _DATATYPES[scalar], Kind.LIST, field)
    return TensorSpec(field.name, "BYTES", Kind.JSON, field)


def _read(spec: TensorSpec, tensor: Any, raw: bytes | None) -> Any:
    shape = _checked_shape(spec, tensor.datatype, list(tensor.shape))
    if spec.kind is Kind.ARRAY:
        if raw is None:
            return _array_of(spec, shape, _typed_contents(spec, tensor))
        return _array(spec, shape, raw)
    return _value(spec, shape, _elements(spec, tensor, raw))


def _array(spec: TensorSpec, shape: list[int], raw: bytes) -> Any:
    """A read-only ndarray over the raw bytes: no copy."""
    assert spec.field.tensor is not None
    dtype = spec.field.tensor.dtype
    return array_from(dtype, shape, raw, spec.field.tensor, f"input {spec.name!r}")


def _array_of(spec: TensorSpec, shape: list[int], elements: list[Any]) -> Any:
    """An ndarray from typed contents or JSON data (a copy: they are Python values)."""
    import numpy as np

    tensor = spec.field.tensor
    assert tensor is not None
    count = math.prod(shape)
    if len(elements) != count:
        raise WireError(
            f"input {spec.name!r} has shape {shape}, which holds {count} elements, but "
            f"{len(elements)} were sent."
        )
    try:
        return np.array(elements, dtype=tensor.dtype).reshape(shape)
    except (TypeError, ValueError, OverflowError) as err:
        raise WireError(f"input {spec.name!r}: {err}.") from None


def _typed_contents(spec: TensorSpec, tensor: Any) -> list[Any]:
    field = _ARRAY_CONTENTS.get(spec.datatype)
    if field is None:
        raise WireError(
            f"input {spec.name!r}: {spec.datatype} has no typed contents field; send it in "
            "raw_input_contents."
        )
    return list(getattr(tensor.contents, field))


def _read_json(spec: TensorSpec, tensor: Mapping[str, Any]) -> Any:
    shape = _checked_shape(spec, tensor.get("datatype", ""), tensor.get("shape"))
    data = tensor.get("data")
    if data is None:
        raise WireError(f"input {spec.name!r} has no `data`; send its elements as a JSON array.")
    elements = _flatten(data if isinstance(data, list) else [data])
    if spec.kind is Kind.ARRAY:
        return _array_of(spec, shape, elements)
    if spec.datatype == "BYTES" and spec.kind is not Kind.JSON:
        elements = [_json_bytes(spec.name, element) for element in elements]
    elif spec.kind is not Kind.JSON:
        elements = [_json_number(spec, element) for element in elements]
    return _value(spec, shape, elements)


def _checked_shape(spec: TensorSpec, datatype: str, shape: Any) -> list[int]:
    """The tensor's shape, once its datatype and shape suit the input."""
    name = spec.name
    if datatype != spec.datatype:
        raise WireError(
            f"input {name!r} has datatype {datatype or '(none)'}; it takes {spec.datatype}."
        )
    if not isinstance(shape, list) or not all(
        isinstance(size, int) and not isinstance(size, bool) for size in shape
    ):
        raise WireError(f"input {name!r} needs a shape: a list of whole numbers, such as [1].")
    if any(size < 0 for size in shape):
        raise WireError(f"input {name!r} has shape {shape}: sizes cannot be negative.")
    tensor = spec.field.tensor
    if tensor is not None:
        if not tensor.fits(tuple(shape)):
            raise WireError(f"input {name!r} has shape {shape}; it takes {tensor.describe()}.")
        return shape
    if spec.kind is Kind.LIST and len(shape) != 1:
        raise WireError(f"input {name!r} has shape {shape}; it takes a 1-D list, shape [n].")
    if spec.kind is not Kind.LIST and math.prod(shape) != 1:
        raise WireError(f"input {name!r} has shape {shape}; it takes one element, shape [1].")
    return shape


def _value(spec: TensorSpec, shape: list[int], elements: list[Any]) -> Any:
    """The Python value of a tensor's elements, checked against its shape and the field."""
    name = spec.name
    count = math.prod(shape)
    if len(elements) != count:
        raise WireError(
            f"input {name!r} has shape {shape}, which holds {count} elements, but "
            f"{len(elements)} were sent."
        )
    field = spec.field
    if spec.kind is Kind.JSON:
        element = elements[0]
        try:
            if isinstance(element, bytes | str):
                return msgspec.json.decode(element, type=field.annotation, dec_hook=decode_hook)
            return msgspec.convert(element, field.annotation, dec_hook=decode_hook)
        except msgspec.ValidationError as err:
            raise wire_error(err, name) from None
        except msgspec.DecodeError as err:
            raise WireError(f"input {name!r} is not valid JSON ({err}).") from None
    if field.value_type is Scalar.STRING:
        elements = [_text(name, element) for element in elements]
    value = elements[0] if spec.kind is Kind.SCALAR else elements
    if field.needs_conversion:
        try:
            return msgspec.convert(value, field.annotation, dec_hook=decode_hook)
        except msgspec.ValidationError as err:
            raise wire_error(err, name) from None
    return value


def _flatten(data: list[Any]) -> list[Any]:
    """KServe's JSON data may be nested row-major lists; the elements are the leaves."""
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    for item in data:
        flat += _flatten(item) if isinstance(item, list) else [item]
    return flat


def _json_bytes(name: str, element: object) -> bytes:
    if not isinstance(element, str):
        raise WireError(f"input {name!r}: BYTES elements are JSON strings, got {element!r}.")
    return element.encode("utf-8")


def _json_number(spec: TensorSpec, element: object) -> object:
    expected = _JSON_TYPES[spec.datatype]
    is_bool = isinstance(element, bool)
    if not isinstance(element, expected) or (is_bool and spec.datatype != "BOOL"):
        raise WireError(
            f"input {spec.name!r}: {spec.datatype} elements are JSON "
            f"{'booleans' if spec.datatype == 'BOOL' else 'numbers'}, got {element!r}."
        )
    return float(element) if spec.datatype == "FP64" else element  # type: ignore[arg-type]


def _elements(spec: TensorSpec, tensor: Any, raw: bytes | None) -> list[Any]:
    """The flat list of elements, from raw bytes or the typed contents field."""
    if raw is None:
        return list(getattr(tensor.contents, _CONTENTS[spec.datatype]))
    return _raw_elements(spec, raw)


def _raw_elements(spec: TensorSpec, raw: bytes) -> list[Any]:
    """Raw contents, little-endian, as the protocol lays them out, -> elements."""
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


def _json_data(name: str, spec_and_value: tuple[TensorSpec, Any]) -> list[Any]:
    """An output's elements as JSON values: text for BYTES, JSON text for nested values."""
    spec, value = spec_and_value
    if value is None:
        return []
    if spec.kind is Kind.ARRAY:
        return list(value.ravel().tolist())  # an ndarray, checked by _write
    if spec.kind is Kind.JSON:
        return [_JSON.encode(value).decode()]
    elements = [value] if spec.kind is Kind.SCALAR else list(value)
    if spec.datatype == "BYTES" and spec.field.value_type is Scalar.BYTES:
        return [bytes(element).decode("utf-8", errors="replace") for element in elements]
    return [e.value if isinstance(e, enum.Enum) else e for e in elements]


def _write(spec: TensorSpec, value: object) -> tuple[list[int], bytes]:
    """One output's shape and raw bytes; a value the schema does not allow is a ResultError."""
    if value is None:
        return [0], b""
    if spec.field.tensor is not None:
        try:
            _, shape, data = array_parts(value, spec.field.tensor, f"output {spec.name!r}")
        except WireError as err:
            raise ResultError(str(err)) from None
        return shape, data
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


def _part(result: object, name: str) -> object:
    """One field of a Struct, dataclass or TypedDict result: one output."""
    return result[name] if isinstance(result, dict) else getattr(result, name)
