"""The one description of a model: every wire artefact (.proto, descriptor, codec) is read off it.

Frozen value objects only; their wire names come from `naming`, their markers from `markers`.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from blazerpc.errors import DefinitionError
from blazerpc.schema import naming
from blazerpc.schema.markers import Batching, Continuous, Placement, Tensor

__all__ = (
    "NO_DEFAULT",
    "EnumRef",
    "EnumSpec",
    "EnumValueSpec",
    "FieldSpec",
    "Label",
    "MessageKind",
    "MessageRef",
    "MessageSpec",
    "ModelSpec",
    "Scalar",
    "ServiceSpec",
    "Shape",
    "ValueType",
    "WellKnown",
    "doc_summary",
    "type_name",
)


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

    @classmethod
    def of(cls, *, client_streaming: bool, server_streaming: bool) -> Shape:
        """The shape of an rpc that streams the way the two flags say (a descriptor's)."""
        if client_streaming:
            return cls.BIDIRECTIONAL if server_streaming else cls.CLIENT_STREAMING
        return cls.SERVER_STREAMING if server_streaming else cls.UNARY

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

    def missing_value(self) -> object:
        """What a left-out field decodes to, on every transport alike; NO_DEFAULT if required.

        A fresh copy of its default (a list, dict or set default is never shared between
        calls), else None when it is nullable, else an empty list or map.
        """
        if self.has_default:
            default = self.default
            return copy.deepcopy(default) if isinstance(default, list | dict | set) else default
        if self.is_nullable:
            return None
        if self.label is Label.REPEATED:
            return []
        if self.label is Label.MAP:
            return {}
        return NO_DEFAULT

    @property
    def is_required(self) -> bool:
        """A caller must send this field: it has no default and cannot be None or empty."""
        return not self.has_default and not self.is_nullable and self.label is Label.SINGULAR

    @property
    def proto_type(self) -> str:
        """The type as the .proto declares it: `optional int64`, `repeated Box`, `map<...>`."""
        spelled = self.type_spelling
        return f"optional {spelled}" if self.is_proto3_optional else spelled

    @property
    def type_spelling(self) -> str:
        """The type as messages name it, presence aside: `int64`, `repeated Box`, `map<...>`."""
        value = type_name(self.value_type)
        if self.label is Label.MAP and self.key_type is not None:
            return f"map<{self.key_type.value}, {value}>"
        if self.label is Label.REPEATED:
            return f"repeated {value}"
        return value

    @property
    def is_proto3_optional(self) -> bool:
        """Declared `optional`: a singular scalar or enum whose presence the server needs."""
        return (
            self.tracks_presence
            and self.label is Label.SINGULAR
            and isinstance(self.value_type, Scalar | EnumRef)
        )


def type_name(value_type: ValueType) -> str:
    """The type as the .proto spells it: `int64`, `google.protobuf.Timestamp`, `Box`."""
    if isinstance(value_type, MessageRef | EnumRef):
        return value_type.name
    return str(value_type.value)


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
    batching: Batching | Continuous | None = None
    """Set for a batch function (called with lists, one item per concurrent call) or a
    continuous step function (lists over the streams active in a step)."""
    step_parameter: str | None = None
    """A continuous step function's `list[Step]` parameter, filled by the server."""
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Message or enum name -> `parameter 'box' is annotated Box`, for error messages."""
    version: str = "1"
    """The model's version, as the Open Inference Protocol and the gateway's listing name it;
    the typed rpc serves the model as it is, with no version in its path."""
    max_concurrent: int | None = None
    """How many calls of the model run at once (None: no bound); later ones wait their turn."""
    openai: str | None = None
    """The OpenAI route that serves it too ("chat", "completions", "embeddings"), if any."""
    placement: Placement | None = field(default=None, compare=False)
    """Replicas and resources when scaled out (`blaze ray`); no part of the wire schema."""

    @property
    def rpc_name(self) -> str:
        """`generate` -> `PredictGenerate`."""
        return naming.rpc_name(self.name)

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
        return naming.qualified_name(self.package, self.name)

    @property
    def file_name(self) -> str:
        """The path protoc knows the schema by: `blazerpc.proto`, `acme/vision.proto`."""
        return naming.proto_file_name(self.package)

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
        return naming.rpc_path(self.full_name, model.rpc_name)

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
        other = seen.setdefault(naming.json_name(spec.name), spec.name)
        if other != spec.name:
            raise DefinitionError(
                f"model {model.name!r} ({model.location}): fields {other!r} and {spec.name!r} "
                f"of {message.name} both have the JSON name {naming.json_name(spec.name)!r}, which "
                "protoc refuses. Rename one of them."
            )


def _same_type(a: MessageSpec | EnumSpec, b: MessageSpec | EnumSpec) -> bool:
    """Two uses of one type: the same class, or the same generated message (a wrapper of the
    same list, or the one `Tensor` every numpy array travels in)."""
    if isinstance(a, MessageSpec) and isinstance(b, MessageSpec) and a.kind in _GENERATED:
        return a == b
    return a.python_type is not None and a.python_type is b.python_type


_GENERATED = (MessageKind.WRAPPER, MessageKind.TENSOR)


def _what(spec: MessageSpec | EnumSpec) -> str:
    if spec.python_type is not None:
        return f"class {spec.python_type.__module__}.{spec.python_type.__qualname__}"
    return f"the generated {spec.name}"


def doc_summary(doc: str | None) -> str:
    """The first line of a docstring: it becomes the comment above an rpc or message."""
    return (doc or "").strip().split("\n", 1)[0].strip()
