"""JSON <-> Python values for the HTTP gateway, read off the same schema as the protobuf codec.

Each request message becomes a msgspec Struct built from the schema's fields (their
annotations, defaults and constraints), so JSON is parsed and validated in one pass, strictly:
a wrong type, a missing field or an unknown one is a WireError naming the field path. A
response is `{"result": ...}`, the JSON twin of the protobuf response message.

Where JSON differs from protobuf's JSON mapping, it is msgspec's: int64 is a JSON number (not
a string), an enum is its number, bytes are base64, a timedelta is an ISO 8601 duration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from blazerpc.errors import ResultError, WireError
from blazerpc.schema.markers import Tensor
from blazerpc.schema.naming import RESULT_FIELD
from blazerpc.schema.pydantic_models import (
    decode_hook,
    encode_hook,
    is_pydantic_model,
    json_twin,
    schema_hook,
)
from blazerpc.schema.spec import (
    NO_DEFAULT,
    FieldSpec,
    Label,
    MessageSpec,
    ModelSpec,
    Scalar,
    ServiceSpec,
)
from blazerpc.wire.arrays import array_from, check_array
from blazerpc.wire.protobuf import wire_error

__all__ = ("JsonCodec", "TensorJson", "codecs_of", "json_schemas", "schema_components")


def _encode_extra(value: object) -> object:
    """What msgspec cannot encode itself: numpy arrays, as TensorJson; pydantic models."""
    if is_pydantic_model(type(value)):
        return encode_hook(value)
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None or not hasattr(value, "tobytes"):
        raise TypeError(f"{type(value).__name__} cannot be sent as JSON")
    little = value.astype(dtype.newbyteorder("<"), copy=False)  # type: ignore[attr-defined]
    return {"dtype": dtype.name, "shape": list(shape), "data": little.tobytes()}


_ENCODER = msgspec.json.Encoder(enc_hook=_encode_extra)
_SCALAR_TYPES: dict[Scalar, tuple[type, ...]] = {
    Scalar.INT64: (int,),
    Scalar.DOUBLE: (float, int),
    Scalar.BOOL: (bool,),
    Scalar.STRING: (str,),
    Scalar.BYTES: (bytes, bytearray, memoryview),
}


class JsonCodec:
    """One model's JSON: request bodies in, `{"result": ...}` out."""

    def __init__(self, model: ModelSpec) -> None:
        self.model = model
        self.request_type = _struct_of(model.request)
        self.response_type = _struct_of(model.response)
        self._decoder = msgspec.json.Decoder(self.request_type, dec_hook=decode_hook)
        self._names = tuple(spec.name for spec in model.request.fields)
        self._tensors = [(spec.name, spec.tensor) for spec in model.request.fields if spec.tensor]
        self._returns = any(field.name == RESULT_FIELD for field in model.response.fields)
        self._check_result = (
            _result_check(model.response.field_named(RESULT_FIELD)) if self._returns else None
        )

    def decode(self, body: bytes | str) -> dict[str, Any]:
        """A request message's fields; an empty body is `{}`. Raises WireError naming the field."""
        if not body.strip():
            body = b"{}"
        try:
            message = self._decoder.decode(body)
        except msgspec.ValidationError as err:
            raise wire_error(err, "") from None
        except msgspec.DecodeError as err:
            raise WireError(
                f"the request is not valid JSON ({_lower_first(str(err))}). Send a JSON object "
                f"of {self.model.request.name}'s fields, for example "
                f"{_example(self.model.request)}."
            ) from None
        return self._values(message)

    def decode_document(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of a JSON document already parsed, checked exactly as `decode` checks."""
        try:
            message = msgspec.convert(
                document, self.request_type, str_keys=True, dec_hook=decode_hook
            )
        except msgspec.ValidationError as err:
            raise wire_error(err, "") from None
        return self._values(message)

    def _values(self, message: msgspec.Struct) -> dict[str, Any]:
        values = {name: getattr(message, name) for name in self._names}
        for name, tensor in self._tensors:
            value = values[name]
            if value is not None:
                where = f"field '{name}'"
                values[name] = array_from(value.dtype, value.shape, value.data, tensor, where)
        return values

    def encode(self, result: object) -> bytes:
        """`{"result": ...}` for one result or streamed item; a wrong type is a ResultError.

        A model annotated `-> None` answers `{}`.
        """
        if self._check_result is None:
            return b"{}"
        self._check_result(result)
        try:
            return b'{"result":' + _ENCODER.encode(result) + b"}"
        except (TypeError, ValueError, OverflowError) as err:
            raise ResultError(f"{type(result).__name__} cannot be sent as JSON ({err})") from None


def json_schemas(
    codecs: Iterable[JsonCodec], ref_template: str
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """JSON Schemas of every model's request and response, sharing their nested types.

    Returns `({model: {"request": ref, "response": ref}}, definitions)`.
    """
    codecs = list(codecs)
    types = [t for codec in codecs for t in (codec.request_type, codec.response_type)]
    refs, definitions = schema_components(types, ref_template)
    by_model = {
        codec.model.name: {"request": refs[2 * i], "response": refs[2 * i + 1]}
        for i, codec in enumerate(codecs)
    }
    return by_model, definitions


def schema_components(
    types: list[Any], ref_template: str
) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """msgspec's JSON Schema components, with each pydantic model as the component of its
    Struct twin (so its constraints show as a Struct's would)."""
    found: set[type] = set()
    hook = schema_hook(found, ref_template)
    while True:
        seen = len(found)
        twins = [json_twin(cls) for cls in sorted(found, key=lambda cls: cls.__name__)]
        refs, definitions = msgspec.json.schema_components(
            [*types, *twins], schema_hook=hook, ref_template=ref_template
        )
        if len(found) == seen:  # the twins named no model not already among them
            return refs[: len(types)], definitions


def _struct_of(spec: MessageSpec) -> type[msgspec.Struct]:
    """A msgspec Struct with the message's fields: JSON is decoded straight into it."""
    return msgspec.defstruct(
        spec.name,
        [_struct_field(field) for field in spec.fields],
        forbid_unknown_fields=True,
        kw_only=True,
    )


class TensorJson(msgspec.Struct, forbid_unknown_fields=True):
    """A numpy array in JSON: its dtype, its shape, and its bytes in base64 (as in the .proto)."""

    dtype: str
    shape: list[int]
    data: bytes


def _struct_field(spec: FieldSpec) -> tuple[str, object] | tuple[str, object, object]:
    annotation = TensorJson if spec.tensor is not None else spec.annotation
    if spec.is_nullable:
        annotation = annotation | None  # type: ignore[operator]  # annotations are types here
    missing = spec.missing_value()
    if missing is NO_DEFAULT:
        return spec.name, annotation
    if isinstance(missing, list | dict | set):  # a fresh one per request, from the schema's rule
        return spec.name, annotation, msgspec.field(default_factory=spec.missing_value)
    return spec.name, annotation, missing  # a constant, so the JSON Schema shows it


def _result_check(spec: FieldSpec) -> Callable[[object], None]:
    """A cheap type check for plain results; msgspec's encoder catches the rest."""
    tensor = spec.tensor
    if tensor is not None:
        return lambda result: None if result is None else _check_array(result, tensor)
    accepted = (
        _SCALAR_TYPES.get(spec.value_type)
        if spec.label is Label.SINGULAR and isinstance(spec.value_type, Scalar)
        else None
    )
    expected = spec.proto_type.removeprefix("optional ")
    is_nullable = spec.is_nullable

    def check(result: object) -> None:
        if result is None:
            if is_nullable:
                return
            raise ResultError(f"got None where the schema says {expected}")
        if accepted is None:
            return
        is_bool = isinstance(result, bool)
        if not isinstance(result, accepted) or (is_bool and spec.value_type is not Scalar.BOOL):
            raise ResultError(f"expected {expected}, got {type(result).__name__}")

    return check


def _check_array(result: object, tensor: Tensor) -> None:
    try:
        check_array(result, tensor, "the result")  # the encoder copies it out, once
    except WireError as err:
        raise ResultError(str(err)) from None


def _example(spec: MessageSpec) -> str:
    required = [field.name for field in spec.fields if field.is_required]
    return "{" + ", ".join(f'"{name}": ...' for name in required) + "}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def codecs_of(schema: ServiceSpec) -> dict[str, JsonCodec]:
    """Every model's JSON codec, by model name."""
    return {model.name: JsonCodec(model) for model in schema.models}
