"""The one description of a model: every wire artefact (.proto, descriptor, codec) is read off it.

Wire names are derived here and only here, following the BlazeRPC convention: model
`text-embed` is `rpc PredictTextEmbed(TextEmbedRequest) returns (TextEmbedResponse)`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from blazerpc.errors import DefinitionError

__all__ = (
    "NO_DEFAULT",
    "TENSOR_DATATYPES",
    "TENSOR_MESSAGE",
    "Batching",
    "RESULT_FIELD",
    "EnumRef",
    "EnumSpec",
    "EnumValueSpec",
    "MAX_FIELD_NUMBER",
    "Field",
    "FieldSpec",
    "Label",
    "MessageKind",
    "MessageRef",
    "MessageSpec",
    "ModelSpec",
    "Scalar",
    "ServiceSpec",
    "Shape",
    "Tensor",
    "ValueType",
    "WellKnown",
    "doc_summary",
    "is_model_name",
    "is_package_name",
    "enum_value_name",
    "is_wire_identifier",
    "json_name",
    "map_entry_name",
    "request_name",
    "response_name",
    "wire_stem",
    "wrapper_name",
)

RESULT_FIELD = "result"
"""The response field that carries a model's return value (or one streamed item)."""

_MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGE = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*")


class _NoDefault:
    """The marker for a field that has no default value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT = _NoDefault()


class Shape(enum.Enum):
    """How many messages flow each way: read from the function's signature."""

    UNARY = "unary"
    SERVER_STREAMING = "server_streaming"
    CLIENT_STREAMING = "client_streaming"
    BIDIRECTIONAL = "bidirectional"

    @property
    def is_client_streaming(self) -> bool:
        """The client sends a stream of messages."""
        return self in (Shape.CLIENT_STREAMING, Shape.BIDIRECTIONAL)

    @property
    def is_server_streaming(self) -> bool:
        """The server answers with a stream of messages."""
        return self in (Shape.SERVER_STREAMING, Shape.BIDIRECTIONAL)


class Scalar(enum.Enum):
    """The protobuf scalar types a Python annotation can map to."""

    INT64 = "int64"
    DOUBLE = "double"
    BOOL = "bool"
    STRING = "string"
    BYTES = "bytes"


class WellKnown(enum.Enum):
    """Google's well-known message types, imported rather than redefined."""

    TIMESTAMP = "google.protobuf.Timestamp"
    DURATION = "google.protobuf.Duration"

    @property
    def import_path(self) -> str:
        """The file a .proto imports to use this type."""
        return {
            WellKnown.TIMESTAMP: "google/protobuf/timestamp.proto",
            WellKnown.DURATION: "google/protobuf/duration.proto",
        }[self]


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A message defined in this schema, by its unqualified name."""

    name: str


@dataclass(frozen=True, slots=True)
class EnumRef:
    """An enum defined in this schema, by its unqualified name."""

    name: str


ValueType = Scalar | WellKnown | MessageRef | EnumRef


class Label(enum.Enum):
    """How many values a field holds."""

    SINGULAR = "singular"
    REPEATED = "repeated"
    MAP = "map"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One protobuf field and the Python value it decodes to.

    Singular scalar and enum fields are declared proto3 `optional`, so that the server can tell
    a field the caller left out from one set to zero; a response's non-nullable `result` is not,
    since the server always sets it.
    """

    name: str
    number: int
    label: Label
    value_type: ValueType
    annotation: object
    """The Python annotation a wire value is converted to, constraints included."""
    key_type: Scalar | None = None
    is_nullable: bool = False
    """The Python side accepts None (`T | None`); a missing value decodes as None."""
    default: object = NO_DEFAULT
    constraints: tuple[tuple[str, object], ...] = ()
    needs_conversion: bool = False
    """Decoding needs msgspec.convert (Structs, enums, constraints), not just upb's value."""
    tracks_presence: bool = True
    """Whether the wire tells "left out" from zero; off only for a non-nullable result."""
    is_pinned: bool = False
    """The number was chosen by the user (`Annotated[int, Field(7)]`), not assigned."""
    tensor: Tensor | None = None
    """Set for a numpy array (`Annotated[np.ndarray, Tensor("float32", (-1, 3))]`)."""

    @property
    def has_default(self) -> bool:
        """A value the receiver applies when the field is left out."""
        return self.default is not NO_DEFAULT

    @property
    def is_required(self) -> bool:
        """A caller must send this field: it has no default and cannot be None or empty."""
        return not self.has_default and not self.is_nullable and self.label is Label.SINGULAR

    @property
    def proto_type(self) -> str:
        """The type as the .proto declares it: `optional int64`, `repeated Box`, `map<...>`."""
        value = _type_name(self.value_type)
        if self.label is Label.MAP and self.key_type is not None:
            return f"map<{self.key_type.value}, {value}>"
        if self.label is Label.REPEATED:
            return f"repeated {value}"
        return f"optional {value}" if self.is_proto3_optional else value

    @property
    def is_proto3_optional(self) -> bool:
        """Declared `optional`: a singular scalar or enum whose presence the server needs."""
        return (
            self.tracks_presence
            and self.label is Label.SINGULAR
            and isinstance(self.value_type, Scalar | EnumRef)
        )


def _type_name(value_type: ValueType) -> str:
    if isinstance(value_type, MessageRef | EnumRef):
        return value_type.name
    return str(value_type.value)


@dataclass(frozen=True, slots=True)
class Field:
    """Pins a field's wire number: `count: Annotated[int, Field(7)]`.

    Numbers are otherwise assigned for you and kept stable by the lock file (see
    docs/schema-evolution.md); pin one only to match a schema that exists elsewhere.
    """

    number: int

    def __post_init__(self) -> None:
        is_int = isinstance(self.number, int) and not isinstance(self.number, bool)
        if not is_int or not 1 <= self.number <= MAX_FIELD_NUMBER or 19000 <= self.number <= 19999:
            raise DefinitionError(
                f"Field({self.number!r}): a protobuf field number is a whole number from 1 to "
                f"{MAX_FIELD_NUMBER}, outside 19000-19999 (reserved by protobuf). "
                "Use for example Field(7)."
            )


MAX_FIELD_NUMBER = 536_870_911

TENSOR_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
"""numpy dtype name -> the Open Inference Protocol's datatype, for every dtype a Tensor takes."""
TENSOR_MESSAGE = "Tensor"
"""The message a numpy array travels in on the typed service: dtype, shape, raw bytes."""


@dataclass(frozen=True, slots=True)
class Tensor:
    """Declares a numpy array parameter or result: `Annotated[np.ndarray, Tensor("float32")]`.

    `shape` is optional; in it, -1 marks a dimension of any size: `Tensor("uint8", (-1, 3))`.
    Arrays are read without copying from the request's bytes (so they are read-only), and
    travel little-endian, C order.
    """

    dtype: str
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in TENSOR_DATATYPES:
            raise DefinitionError(
                f"Tensor({self.dtype!r}): the dtype is one of {', '.join(TENSOR_DATATYPES)}. "
                'Use for example Tensor("float32").'
            )
        if self.shape is not None and not (
            isinstance(self.shape, tuple)
            and all(isinstance(size, int) and size >= -1 for size in self.shape)
        ):
            raise DefinitionError(
                f"Tensor({self.dtype!r}, {self.shape!r}): the shape is a tuple of sizes, -1 "
                f'for any size. Use for example Tensor("{self.dtype}", (-1, 3)).'
            )

    @property
    def datatype(self) -> str:
        """The Open Inference Protocol's name for the dtype: `FP32`."""
        return TENSOR_DATATYPES[self.dtype]

    def describe(self) -> str:
        """`float32 [-1, 3]`, for comments and messages."""
        shape = "any shape" if self.shape is None else str(list(self.shape))
        return f"{self.dtype} {shape}"

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether an array of `shape` is one this tensor takes."""
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )


class MessageKind(enum.Enum):
    """Where a message comes from: it decides how the codec converts it."""

    REQUEST = "request"
    RESPONSE = "response"
    STRUCT = "struct"
    """A user's msgspec.Struct or dataclass."""
    WRAPPER = "wrapper"
    """Holds a list or map inside a list or map, which protobuf cannot nest directly."""
    TENSOR = "tensor"
    """A numpy array: dtype, shape and its raw bytes."""


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One protobuf message."""

    name: str
    kind: MessageKind
    fields: tuple[FieldSpec, ...]
    python_type: type | None = None
    doc: str = ""
    reserved_numbers: tuple[int, ...] = ()
    """Numbers of removed fields (from the lock file): never used again."""
    reserved_names: tuple[str, ...] = ()
    """Names of removed fields, until a field of that name comes back."""

    def field_named(self, name: str) -> FieldSpec:
        """The field called `name`; KeyError if there is none."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class EnumValueSpec:
    """One enum value: the prefixed protobuf name and its number."""

    name: str
    number: int


@dataclass(frozen=True, slots=True)
class EnumSpec:
    """One protobuf enum, built from a Python int-valued enum."""

    name: str
    values: tuple[EnumValueSpec, ...]
    python_type: type[enum.Enum]
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Batching:
    """How a batched model groups concurrent calls; every knob has one exact meaning.

    - `max_size`: the most calls in one batch, never exceeded.
    - `max_wait_s`: the longest a call waits for company, counted from its arrival; 0 means
      never wait: a batch starts as soon as the model is free.
    - `max_queue`: calls waiting beyond this many are refused at once (RESOURCE_EXHAUSTED).
    - `max_concurrent`: how many batches may run at the same time.

    While a batch runs, new calls queue and form the next one, so batches grow with load
    without adding latency to a lone call.
    """

    max_size: int = 32
    max_wait_s: float = 0.0
    max_queue: int = 1024
    max_concurrent: int = 1

    def __post_init__(self) -> None:
        for knob, value, smallest in (
            ("max_size", self.max_size, 1),
            ("max_queue", self.max_queue, 1),
            ("max_concurrent", self.max_concurrent, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < smallest:
                raise DefinitionError(
                    f"Batching({knob}={value!r}): {knob} is a whole number of at least "
                    f"{smallest}. Use for example {knob}={max(smallest, 8)}."
                )
        if not isinstance(self.max_wait_s, int | float) or not 0 <= self.max_wait_s < 60:
            raise DefinitionError(
                f"Batching(max_wait_s={self.max_wait_s!r}): the wait is in seconds, from 0 "
                "(never wait) to under 60. Use for example max_wait_s=0.002."
            )


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decorated function and everything derived from its signature."""

    name: str
    function: Callable[..., object] = field(compare=False)
    shape: Shape
    is_async: bool
    request: MessageSpec
    response: MessageSpec
    messages: tuple[MessageSpec, ...]
    """Every other message the request and response need, in first-use order."""
    enums: tuple[EnumSpec, ...]
    location: str
    """`qualname in file:line`, for error messages."""
    doc: str = ""
    context_parameter: str | None = None
    """The parameter annotated `Context`, injected by the server and absent from the wire."""
    batching: Batching | None = None
    """Set for a batch function: it is called with lists, one item per concurrent call."""
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Message or enum name -> `parameter 'box' is annotated Box`, for error messages."""

    @property
    def rpc_name(self) -> str:
        """`generate` -> `PredictGenerate`."""
        return f"Predict{wire_stem(self.name)}"

    @property
    def streamed_parameter(self) -> str | None:
        """The parameter that receives the client's stream, if the model takes one."""
        return self.request.fields[0].name if self.shape.is_client_streaming else None


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """The whole schema of an app: one proto package, one service, its messages and enums."""

    package: str
    name: str
    models: tuple[ModelSpec, ...]
    messages: tuple[MessageSpec, ...]
    enums: tuple[EnumSpec, ...]

    @classmethod
    def build(cls, package: str, name: str, models: Iterable[ModelSpec]) -> ServiceSpec:
        """Gather the models' messages, sharing those reused and refusing clashing names."""
        models = tuple(models)
        types = _TypeNames()
        messages: list[MessageSpec] = []
        enums: list[EnumSpec] = []
        for model in models:
            for message in (model.request, model.response, *model.messages):
                if types.claim(message.name, message, model):
                    _check_json_names(message, model)
                    messages.append(message)
            for enum_spec in model.enums:
                if types.claim(enum_spec.name, enum_spec, model):
                    types.claim_values(enum_spec, model)
                    enums.append(enum_spec)
        return cls(package, name, models, tuple(messages), tuple(enums))

    @property
    def full_name(self) -> str:
        """`blazerpc.InferenceService`: the service's name on the wire."""
        return f"{self.package}.{self.name}"

    @property
    def file_name(self) -> str:
        """The path protoc knows the schema by: `blazerpc.proto`, `acme/vision.proto`."""
        return self.package.replace(".", "/") + ".proto"

    @property
    def imports(self) -> tuple[str, ...]:
        """The well-known .proto files the schema needs, sorted."""
        used = {
            spec.value_type.import_path
            for message in self.messages
            for spec in message.fields
            if isinstance(spec.value_type, WellKnown)
        }
        return tuple(sorted(used))

    def rpc_path(self, model: ModelSpec) -> str:
        """The HTTP/2 path of a model's rpc: `/blazerpc.InferenceService/PredictGenerate`."""
        return f"/{self.full_name}/{model.rpc_name}"

    def message(self, name: str) -> MessageSpec:
        """The message called `name`; KeyError if the schema has none."""
        for message in self.messages:
            if message.name == name:
                return message
        raise KeyError(name)

    def model(self, name: str) -> ModelSpec:
        """The model called `name`; KeyError if there is none."""
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)


class _TypeNames:
    """The message and enum names taken so far, and by whom."""

    def __init__(self) -> None:
        self._owners: dict[str, tuple[MessageSpec | EnumSpec, ModelSpec]] = {}
        self._enum_values: dict[str, str] = {}

    def claim_values(self, spec: EnumSpec, model: ModelSpec) -> None:
        """Enum values share the package's scope: `Foo.BAR_BAZ` and `FooBar.BAZ` would clash."""
        for value in spec.values:
            owner = self._enum_values.setdefault(value.name, spec.name)
            if owner != spec.name:
                raise DefinitionError(
                    f"model {model.name!r} ({model.location}): enums {owner} and {spec.name} "
                    f"both give the protobuf value name {value.name}, and enum values share "
                    "one scope per package. Rename a member or one of the enums."
                )

    def claim(self, name: str, spec: MessageSpec | EnumSpec, model: ModelSpec) -> bool:
        """Record `spec` under `name`; False if the same type is already there."""
        taken = self._owners.get(name)
        if taken is None:
            self._owners[name] = (spec, model)
            return True
        other, other_model = taken
        if _same_type(spec, other):
            return False
        origin = model.origins.get(name)
        where = f"{model.name!r} ({model.location}): {origin + '; ' if origin else ''}"
        raise DefinitionError(
            f"model {where}{_what(spec)} and {_what(other)} "
            f"(used by model {other_model.name!r}) both need the protobuf name {name!r}. "
            "Rename one of the classes (or the model) so that every message name is unique."
        )


def _check_json_names(message: MessageSpec, model: ModelSpec) -> None:
    """protoc refuses two fields with one JSON name (`max_tokens` and `maxTokens`)."""
    seen: dict[str, str] = {}
    for spec in message.fields:
        other = seen.setdefault(json_name(spec.name), spec.name)
        if other != spec.name:
            raise DefinitionError(
                f"model {model.name!r} ({model.location}): fields {other!r} and {spec.name!r} "
                f"of {message.name} both have the JSON name {json_name(spec.name)!r}, which "
                "protoc refuses. Rename one of them."
            )


def _same_type(a: MessageSpec | EnumSpec, b: MessageSpec | EnumSpec) -> bool:
    if isinstance(a, MessageSpec) and isinstance(b, MessageSpec) and a.kind is MessageKind.WRAPPER:
        return a == b
    return a.python_type is not None and a.python_type is b.python_type


def _what(spec: MessageSpec | EnumSpec) -> str:
    if spec.python_type is not None:
        return f"class {spec.python_type.__module__}.{spec.python_type.__qualname__}"
    return f"the generated {spec.name}"


def wire_stem(model_name: str) -> str:
    """The CamelCase stem of a model's wire names: `text-embed` -> `TextEmbed`."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_.]", model_name))


def request_name(model_name: str) -> str:
    """`text-embed` -> `TextEmbedRequest`."""
    return f"{wire_stem(model_name)}Request"


def response_name(model_name: str) -> str:
    """`text-embed` -> `TextEmbedResponse`."""
    return f"{wire_stem(model_name)}Response"


def wrapper_name(items: FieldSpec) -> str:
    """The message wrapping a nested list or map: `DoubleList`, `StringInt64Map`."""
    if items.key_type is not None:
        return f"{_type_word(items.key_type)}{_type_word(items.value_type)}Map"
    return f"{_type_word(items.value_type)}List"


def enum_value_name(enum_name: str, member: str) -> str:
    """`Color.DARK_RED` -> `COLOR_DARK_RED`: enum values share the package's scope."""
    prefix = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", enum_name).upper()
    return f"{prefix}_{member.upper()}"


def map_entry_name(field_name: str) -> str:
    """The nested message protoc synthesises for `map<K, V> field_name`: `FieldNameEntry`."""
    camel = json_name(field_name)
    return f"{camel[:1].upper()}{camel[1:]}Entry"


def _type_word(value_type: ValueType) -> str:
    if isinstance(value_type, Scalar):
        return value_type.value.capitalize()
    if isinstance(value_type, WellKnown):
        return value_type.value.rsplit(".", 1)[-1]
    return value_type.name


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


def doc_summary(doc: str | None) -> str:
    """The first line of a docstring: it becomes the comment above an rpc or message."""
    return (doc or "").strip().split("\n", 1)[0].strip()
