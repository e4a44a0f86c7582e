"""Python annotations -> protobuf field specs. Anything without an exact wire form is refused.

The table lives in docs/types.md; a change here is a wire change and updates it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import enum
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import msgspec

from blazerpc.errors import DefinitionError
from blazerpc.schema.markers import Field, Tensor
from blazerpc.schema.naming import TENSOR_MESSAGE, enum_value_name, is_wire_identifier, wrapper_name
from blazerpc.schema.pydantic_models import (
    decode_hook,
    encode_hook,
    is_pydantic_model,
    pydantic_fields,
    unresolved,
)
from blazerpc.schema.spec import (
    NO_DEFAULT,
    EnumRef,
    EnumSpec,
    EnumValueSpec,
    FieldSpec,
    Label,
    MessageKind,
    MessageRef,
    MessageSpec,
    Scalar,
    ValueType,
    WellKnown,
    doc_summary,
    type_name,
)

__all__ = ("TENSOR_SPEC", "Site", "TypeMapper", "describe")

_SCALARS: dict[object, Scalar] = {
    bool: Scalar.BOOL,
    int: Scalar.INT64,
    float: Scalar.DOUBLE,
    str: Scalar.STRING,
    bytes: Scalar.BYTES,
}
_WELL_KNOWN: dict[object, WellKnown] = {
    datetime.datetime: WellKnown.TIMESTAMP,
    datetime.timedelta: WellKnown.DURATION,
}
_MAP_KEYS: dict[object, Scalar] = {str: Scalar.STRING, int: Scalar.INT64}
_INT32 = range(-(2**31), 2**31)
_CONSTRAINTS = (
    "gt",
    "ge",
    "lt",
    "le",
    "multiple_of",
    "pattern",
    "min_length",
    "max_length",
    "tz",
)


@dataclass(frozen=True, slots=True)
class Site:
    """Where an annotation was written: the first words of every definition error about it."""

    model: str
    location: str
    trail: tuple[tuple[str, object], ...] = ()
    """(subject, annotation) pairs from the parameter down to the nested field at fault."""

    def at(self, subject: str, annotation: object) -> Site:
        """One step deeper: a nested field, for the error's trail."""
        return Site(self.model, self.location, (*self.trail, (subject, annotation)))

    @property
    def origin(self) -> str:
        """`parameter 'box' is annotated Box`: the first step of the trail."""
        subject, annotation = self.trail[0] if self.trail else ("the model", None)
        return f"{subject} is annotated {describe(annotation)}"

    def fail(self, problem: str, fix: str, culprit: object = None) -> NoReturn:
        """Raise the DefinitionError: model, function, parameter, annotation, problem, fix."""
        where = "; ".join(f"{subject} is annotated {describe(ann)}" for subject, ann in self.trail)
        head = f"model {self.model!r} ({self.location})"
        if where:
            head = f"{head}: {where}"
        if culprit is not None and (not self.trail or culprit is not self.trail[-1][1]):
            problem = f"{describe(culprit)}: {problem}"
        raise DefinitionError(f"{head}; {problem} {fix}")


class TypeMapper:
    """Maps one model's annotations to fields, collecting the messages and enums they need.

    Classes become messages named after the class; a class used twice is one message.
    """

    def __init__(self, localns: Mapping[str, object] | None = None) -> None:
        self._localns = dict(localns or {})
        self._messages: dict[object, MessageSpec | None] = {}
        self._enums: dict[type, EnumSpec] = {}
        self._building: list[tuple[type, bool]] = []
        self.origins: dict[str, str] = {}
        """Message or enum name -> the parameter that first brought it in, for error messages."""

    @property
    def messages(self) -> tuple[MessageSpec, ...]:
        """Every message mapped so far, in the order of first use."""
        return tuple(spec for spec in self._messages.values() if spec is not None)

    @property
    def enums(self) -> tuple[EnumSpec, ...]:
        """Every enum mapped so far, in the order of first use."""
        return tuple(self._enums.values())

    def field(
        self,
        name: str,
        number: int,
        annotation: object,
        site: Site,
        *,
        default: object = NO_DEFAULT,
    ) -> FieldSpec:
        """The field `name` holding values of `annotation`; `site` already names the subject."""
        _check_msgspec_accepts(annotation, site)
        return self._field(name, number, annotation, site, default)

    def _field(
        self,
        name: str,
        number: int,
        annotation: object,
        site: Site,
        default: object,
    ) -> FieldSpec:
        if not is_wire_identifier(name):
            site.fail(
                f"the name {name!r} is not an ASCII identifier, so it cannot be a protobuf field.",
                "Rename it with ASCII letters, digits and underscores.",
            )
        base, constraints = _strip_annotated(annotation)
        base, is_nullable = _strip_none(base, site)
        base, inner_constraints = _strip_annotated(_unwrap_new_type(base))
        constraints = (*constraints, *inner_constraints)
        origin = typing.get_origin(base)
        key_type: Scalar | None = None
        tensor: Tensor | None = None
        if origin is list:
            label = Label.REPEATED
            value_type = self._value(_only_arg(base, site), site, required_edge=False)
        elif origin is dict:
            label = Label.MAP
            if len(typing.get_args(base)) != 2:
                _refuse(base, site)
            key, value = typing.get_args(base)
            key_type = _map_key(key, site)
            if value in (Any, object):
                site.fail(
                    "protobuf map values need one type.",
                    f"Use dict[{describe(key)}, str] or a msgspec.Struct.",
                )
            value_type = self._value(value, site, required_edge=False)
        elif _is_ndarray(base):
            label, value_type = Label.SINGULAR, MessageRef(TENSOR_MESSAGE)
            tensor = self._tensor(annotation, site, default)
        else:
            label = Label.SINGULAR
            is_required = default is NO_DEFAULT and not is_nullable
            value_type = self._value(base, site, required_edge=is_required)
        if default is not NO_DEFAULT and tensor is None:
            _check_default(name, default, annotation, site)
        if is_nullable and label is not Label.SINGULAR:
            empty = "[]" if label is Label.REPEATED else "{}"
            site.fail(
                "protobuf lists and maps cannot tell an empty value from a missing one, "
                "so None cannot be sent.",
                f"Drop `| None` and give an empty default instead (`= {empty}`).",
            )
        pin = _pinned_number(annotation)
        return FieldSpec(
            name=name,
            number=number if pin is None else pin,
            is_pinned=pin is not None,
            label=label,
            value_type=value_type,
            annotation=annotation,
            key_type=key_type,
            is_nullable=is_nullable,
            default=default,
            constraints=constraints,
            needs_conversion=tensor is None and _needs_conversion(annotation),
            tensor=tensor,
        )

    def _value(self, annotation: object, site: Site, *, required_edge: bool) -> ValueType:
        """The type of one value: a scalar, a well-known type, an enum or a message."""
        base, _ = _strip_annotated(annotation)
        base = _unwrap_new_type(base)
        if _is_union(base):
            site.fail(
                "a list item or map value cannot be None or a choice of types.",
                "Use one type, or a msgspec.Struct with an optional field.",
                culprit=base,
            )
        origin = typing.get_origin(base)
        if origin is list or origin is dict:
            return MessageRef(self._wrapper(base, site))
        if _is_ndarray(base):
            self._refuse_tensor(annotation, site)
        if base in _SCALARS:
            return _SCALARS[base]
        if base in _WELL_KNOWN:
            return _WELL_KNOWN[base]
        if isinstance(base, type) and issubclass(base, enum.Enum):
            return EnumRef(self._enum(base, site))
        if isinstance(base, type) and (
            issubclass(base, msgspec.Struct)
            or dataclasses.is_dataclass(base)
            or typing.is_typeddict(base)
            or is_pydantic_model(base)
        ):
            return MessageRef(self._struct(base, site, required_edge))
        _refuse(base, site)

    def _struct(self, cls: type, site: Site, required_edge: bool) -> str:
        name = cls.__name__
        if cls in self._messages:
            self._check_recursion(cls, site, required_edge)
            return name
        if not is_wire_identifier(name):
            site.fail(
                f"the class name {name!r} cannot be a protobuf message name.",
                "Rename the class with ASCII letters, digits and underscores.",
            )
        self._messages[cls] = None
        self.origins.setdefault(name, site.origin)
        self._building.append((cls, required_edge))
        fields = tuple(
            self._field(
                field_name,
                number,
                field_annotation,
                site.at(f"field '{name}.{field_name}'", field_annotation),
                field_default,
            )
            for number, (field_name, field_annotation, field_default) in enumerate(
                self._class_fields(cls, site), start=1
            )
        )
        self._building.pop()
        self._messages[cls] = MessageSpec(
            name, MessageKind.STRUCT, fields, python_type=cls, doc=_class_doc(cls)
        )
        return name

    def _check_recursion(self, cls: type, site: Site, required_edge: bool) -> None:
        """A cycle of required fields would make every value infinitely deep."""
        starts = [i for i, (building, _) in enumerate(self._building) if building is cls]
        if not starts:
            return
        edges = [edge for _, edge in self._building[starts[0] + 1 :]] + [required_edge]
        if all(edges):
            site.fail(
                f"every {cls.__name__} would have to contain another {cls.__name__}, forever.",
                f"Make the field optional (`{cls.__name__} | None = None`) "
                f"or a list (`list[{cls.__name__}] = []`).",
            )

    def _class_fields(self, cls: type, site: Site) -> list[tuple[str, object, object]]:
        """(name, annotation, default) of each field of a class, in order."""
        if is_pydantic_model(cls):
            if getattr(cls, "__pydantic_root_model__", False):
                root = cls.model_fields["root"].annotation  # type: ignore[attr-defined]  # a BaseModel
                site.fail(
                    f"{cls.__qualname__} is a pydantic RootModel: it has no named fields to "
                    "become a message's.",
                    f"Annotate the parameter with its root type, {describe(root)}, instead.",
                )
            if unresolved(cls):  # a class defined after it: pydantic may find it now
                cls.model_rebuild(raise_errors=False)  # type: ignore[attr-defined]  # a BaseModel
            if unresolved(cls):
                site.fail(
                    f"pydantic could not resolve the annotations of {cls.__qualname__}.",
                    f"Define the classes it uses first, or call {cls.__name__}.model_rebuild().",
                )
            return pydantic_fields(cls)
        try:
            if issubclass(cls, msgspec.Struct):
                return [(f.name, f.type, _struct_default(f)) for f in msgspec.structs.fields(cls)]
            hints = typing.get_type_hints(cls, localns=self._localns, include_extras=True)
        except NameError as err:
            site.fail(
                f"the annotations of {cls.__qualname__} cannot be resolved ({err}).",
                "Define the class and the types it uses at module level.",
            )
        if typing.is_typeddict(cls):
            return self._typeddict_fields(cls, hints, site)
        fields = dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ()
        return [(f.name, hints[f.name], _dataclass_default(f)) for f in fields if f.init]

    def _typeddict_fields(
        self, cls: Any, hints: dict[str, Any], site: Site
    ) -> list[tuple[str, object, object]]:
        """A TypedDict's keys, in order; each is required (a key that may be left out has no
        value to give the model: say `X | None` for one that may be empty)."""
        optional = sorted(set(hints) - set(cls.__required_keys__))
        if optional:
            site.fail(
                f"{cls.__name__} may leave out {', '.join(map(repr, optional))} "
                "(total=False or NotRequired), and a message field always has a value.",
                "Make those keys required and `X | None` if they may be empty.",
            )
        return [(name, hint, NO_DEFAULT) for name, hint in hints.items()]

    def _refuse_tensor(self, annotation: object, site: Site) -> NoReturn:
        site.fail(
            "a numpy array is a parameter or a result of its own, annotated with its dtype, "
            "not an item of a list, a map or a class.",
            'Annotate it `Annotated[np.ndarray, Tensor("float32")]`, optionally with a '
            'shape: `Tensor("float32", (-1, 3))`.',
            culprit=annotation,
        )

    def _tensor(self, annotation: object, site: Site, default: object) -> Tensor:
        """A numpy array travels as the Tensor message; only as a parameter or a result."""
        tensor = _tensor_marker(annotation)
        if len(site.trail) != 1 or tensor is None:
            self._refuse_tensor(annotation, site)
        if default is not NO_DEFAULT and default is not None:
            site.fail(
                "a numpy array cannot have a default value other than None.",
                "Drop the default, or use `np.ndarray | None = None`.",
            )
        self._messages.setdefault(TENSOR_MESSAGE, TENSOR_SPEC)
        return tensor

    def _wrapper(self, annotation: object, site: Site) -> str:
        """A message holding a list or map, because protobuf cannot nest them directly."""
        items = self._field("items", 1, annotation, site, NO_DEFAULT)
        key = items.key_type.value if items.key_type is not None else None
        name = wrapper_name(type_name(items.value_type), key)
        self._messages.setdefault(name, MessageSpec(name, MessageKind.WRAPPER, (items,)))
        return name

    def _enum(self, cls: type[enum.Enum], site: Site) -> str:
        if cls not in self._enums:
            self._enums[cls] = _enum_spec(cls, site)
            self.origins.setdefault(cls.__name__, site.origin)
        return cls.__name__


def _enum_spec(cls: type[enum.Enum], site: Site) -> EnumSpec:
    members = list(cls)
    if issubclass(cls, enum.Flag):
        site.fail(
            "flag enums combine members, which a protobuf enum cannot hold.",
            "Use list[YourEnum] for a set of choices.",
            culprit=cls,
        )
    if any(type(m.value) is not int or m.value not in _INT32 for m in members):
        site.fail(
            "protobuf enums are numbered, so every member's value must be a 32-bit int.",
            "Use enum.IntEnum with explicit numbers, and a zero member such as UNSPECIFIED = 0.",
            culprit=cls,
        )
    if not any(m.value == 0 for m in members):
        site.fail(
            "proto3 enums need a member numbered 0: it is what a caller who sends nothing gets.",
            "Add a member such as UNSPECIFIED = 0.",
            culprit=cls,
        )
    ordered = sorted(members, key=lambda m: m.value != 0)  # proto3: the zero value comes first
    values = tuple(EnumValueSpec(enum_value_name(cls.__name__, m.name), m.value) for m in ordered)
    if len({v.name for v in values}) != len(values) or not all(
        is_wire_identifier(v.name) for v in values
    ):
        site.fail(
            "its member names do not give distinct ASCII protobuf names when upper-cased.",
            "Rename the members with distinct ASCII names.",
            culprit=cls,
        )
    return EnumSpec(cls.__name__, values, cls, doc=_class_doc(cls))


def _is_ndarray(annotation: object) -> bool:
    """numpy.ndarray, recognised without importing numpy (an optional extra)."""
    return (
        isinstance(annotation, type)
        and annotation.__name__ == "ndarray"
        and annotation.__module__ == "numpy"
    )


def _tensor_marker(annotation: object) -> Tensor | None:
    """The `Tensor(...)` in an annotation's Annotated metadata (through `| None`), if any."""
    for layer in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(layer) is Annotated:
            for meta in typing.get_args(layer)[1:]:
                if isinstance(meta, Tensor):
                    return meta
    return None


TENSOR_SPEC = MessageSpec(  # the one Tensor message: read by reflection clients too
    TENSOR_MESSAGE,
    MessageKind.TENSOR,
    (
        FieldSpec("dtype", 1, Label.SINGULAR, Scalar.STRING, str, tracks_presence=False),
        FieldSpec("shape", 2, Label.REPEATED, Scalar.INT64, list[int]),
        FieldSpec("data", 3, Label.SINGULAR, Scalar.BYTES, bytes, tracks_presence=False),
    ),
    doc="A numpy array: its dtype (float32), its shape, its bytes (little-endian, C order).",
)


def _pinned_number(annotation: object) -> int | None:
    """The number of a `Field(n)` in the annotation's outer Annotated metadata, if any."""
    if typing.get_origin(annotation) is not Annotated:
        return None
    pins = [meta.number for meta in typing.get_args(annotation)[1:] if isinstance(meta, Field)]
    return pins[-1] if pins else None


def _strip_annotated(annotation: object) -> tuple[object, tuple[tuple[str, object], ...]]:
    """The bare type, and the msgspec.Meta constraints it carried (kept for validation)."""
    if typing.get_origin(annotation) is not Annotated:
        return annotation, ()
    inner, *extras = typing.get_args(annotation)
    found = [
        (name, getattr(meta, name))
        for meta in extras
        if isinstance(meta, msgspec.Meta)
        for name in _CONSTRAINTS
        if getattr(meta, name) is not None
    ]
    inner, more = _strip_annotated(inner)
    return inner, (*more, *found)


def _strip_none(annotation: object, site: Site) -> tuple[object, bool]:
    """`T | None` -> (T, True); any other union is refused."""
    if not _is_union(annotation):
        if annotation is None or annotation is types.NoneType:
            site.fail("None alone carries no data.", "Annotate the type of the value, or T | None.")
        return annotation, False
    options = [arg for arg in typing.get_args(annotation) if arg is not types.NoneType]
    if len(options) != 1:
        site.fail(
            "a union of several types has no single protobuf type.",
            "Use one type, or `T | None` for a value the caller may leave out.",
        )
    return options[0], True


def _is_union(annotation: object) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _unwrap_new_type(annotation: object) -> object:
    while isinstance(annotation, typing.NewType):
        annotation = annotation.__supertype__
    return annotation


def _only_arg(annotation: object, site: Site) -> object:
    args = typing.get_args(annotation)
    if len(args) != 1:
        _refuse(annotation, site)
    return args[0]


def _map_key(key: object, site: Site) -> Scalar:
    bare, _ = _strip_annotated(_unwrap_new_type(key))
    if bare not in _MAP_KEYS:
        site.fail(
            "protobuf map keys must be strings or integers.",
            "Use dict[str, V] or dict[int, V].",
            culprit=key,
        )
    return _MAP_KEYS[bare]


def _refuse(annotation: object, site: Site) -> NoReturn:
    """Fail with the fix that fits what the user wrote."""
    origin = typing.get_origin(annotation) or annotation
    problem, fix = _REFUSALS.get(origin, _REFUSAL_DEFAULT)
    if origin in (list, dict):
        problem, fix = "a bare container does not say what it holds.", _BARE_FIX[origin]
    elif isinstance(origin, type) and issubclass(origin, datetime.date | datetime.time):
        problem, fix = _DATES
    items = {arg for arg in typing.get_args(annotation) if arg is not Ellipsis}
    item = describe(items.pop()) if len(items) == 1 else "T"
    site.fail(problem, fix.replace("{item}", item), culprit=annotation)


_REFUSAL_DEFAULT = (
    "blazerpc cannot put this type on the wire.",
    "Use a scalar, a msgspec.Struct, a dataclass, a TypedDict or a pydantic model; "
    "docs/types.md lists every supported type.",
)
_SET = (
    "protobuf has no set type.",
    "Use list[{item}] (the order and duplicates the caller sends are kept).",
)
_ANY = (
    "protobuf needs a concrete type.",
    "Use a concrete type such as str or a msgspec.Struct, or bytes for opaque data.",
)
_ABSTRACT = (
    "an abstract collection does not say how it goes on the wire.",
    "Use list[{item}].",
)
_DATES = (
    "only datetime.datetime and datetime.timedelta have protobuf forms.",
    "Use datetime.datetime (sent as google.protobuf.Timestamp), or str for an ISO date.",
)
_REFUSALS: dict[object, tuple[str, str]] = {
    set: _SET,
    frozenset: _SET,
    tuple: (
        "protobuf has no tuple type.",
        "Use list[{item}] for a sequence of one type, or a msgspec.Struct for named fields.",
    ),
    Any: _ANY,
    object: _ANY,
    collections.abc.Sequence: _ABSTRACT,
    collections.abc.Iterable: _ABSTRACT,
    collections.abc.Collection: _ABSTRACT,
    typing.Literal: (
        "Literal values have no protobuf form.",
        "Use an enum.IntEnum with a zero member.",
    ),
}
_BARE_FIX = {
    list: "Give the item type, for example list[float].",
    dict: "Give the key and value types, for example dict[str, float].",
}


def _needs_conversion(annotation: object) -> bool:
    """Plain scalars come out of upb as the right Python type; anything else needs msgspec."""
    if annotation in _SCALARS or annotation in _WELL_KNOWN:
        return False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, dict):
        args = [arg for arg in typing.get_args(annotation) if arg is not types.NoneType]
        return any(_needs_conversion(arg) for arg in args)
    return True


def _check_msgspec_accepts(annotation: object, site: Site) -> None:
    """msgspec converts wire values at request time, so it must understand the type now."""
    try:
        msgspec.inspect.type_info(annotation)
    except (NameError, TypeError) as err:
        site.fail(
            f"msgspec cannot use it ({err}).",
            "Define the classes it uses at module level, with resolvable annotations.",
        )


def _struct_default(info: msgspec.structs.FieldInfo) -> object:
    if info.default is not msgspec.NODEFAULT:
        return info.default
    if info.default_factory is not msgspec.NODEFAULT:
        return info.default_factory()
    return NO_DEFAULT


def _dataclass_default(info: dataclasses.Field[Any]) -> object:
    if info.default is not dataclasses.MISSING:
        return info.default
    if info.default_factory is not dataclasses.MISSING:
        return info.default_factory()
    return NO_DEFAULT


def _class_doc(cls: type) -> str:
    """The class's own docstring, not the `Box(x: float)` one dataclasses make up."""
    doc = cls.__doc__ or ""
    if dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("):
        return ""
    return doc_summary(doc)


def describe(annotation: object) -> str:
    """An annotation as the user wrote it: `dict[str, object]`, `Box | None`."""
    if annotation is None or annotation is types.NoneType:
        return "None"
    if annotation is Any:
        return "Any"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        metadata = ", ".join(repr(m) for m in annotation.__metadata__)  # type: ignore[attr-defined]  # Annotated aliases carry __metadata__
        return f"Annotated[{describe(args[0])}, {metadata}]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe(arg) for arg in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(arg) for arg in args)}]"
    if origin is not None:
        name = getattr(origin, "__name__", None) or getattr(origin, "_name", None) or repr(origin)
        return f"{name}[{', '.join(describe(arg) for arg in args)}]" if args else name
    if isinstance(annotation, type):
        return annotation.__qualname__
    return getattr(annotation, "__name__", None) or repr(annotation)


_KEPT_AS_IS = (
    bytes,
    bytearray,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
)


def _check_default(name: str, default: object, annotation: object, site: Site) -> None:
    """A default must be a value of its annotation (constraints included): checked here, once,
    or every call that leaves the field out would fail."""
    try:  # an Enum member, a Struct: as sent; bytes and times stay as they are
        plain = msgspec.to_builtins(default, builtin_types=_KEPT_AS_IS, enc_hook=encode_hook)
    except TypeError:
        return  # no wire form to check it by; the codec's own errors will say what is wrong
    try:
        msgspec.convert(plain, annotation, strict=True, dec_hook=decode_hook)  # "3" is no int
    except (msgspec.ValidationError, TypeError) as err:
        problem = str(err).split(" - at `$", 1)[0]
        subject = site.trail[-1][0] if site.trail and repr(name) in site.trail[-1][0] else None
        site.fail(
            f"the default {default!r} of {subject or f'field {name!r}'} does not fit its "
            f"annotation ({_lower_first(problem)}).",
            "Give it a default of that type, or change the annotation.",
        )


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
