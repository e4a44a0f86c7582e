"""pydantic v2 models as messages, like msgspec Structs; pydantic is an optional extra.

Nothing here imports pydantic: a class is a pydantic model when pydantic is already imported
(the user's module did it) and the class derives from its BaseModel.

A model's fields become message fields by their attribute names (aliases are a JSON
spelling of pydantic's own; the wire keeps one name per field). Constraints that msgspec can
state (gt, ge, lt, le, multiple_of, min_length, max_length, pattern) are carried over, so the
.proto comments, the JSON Schema and the wire errors read as they do for a Struct. A value
coming off the wire is first checked strictly by msgspec against a Struct twin of the model
(the same rules as every other message: no "3" for an int, base64 for bytes in JSON), then
handed to the model's own validation, so the user's validators run too.
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Annotated, Any

import msgspec

from blazerpc.schema.spec import NO_DEFAULT

__all__ = (
    "PER_CALL",
    "decode_hook",
    "encode_hook",
    "is_pydantic_model",
    "json_twin",
    "pydantic_fields",
    "schema_hook",
    "unresolved",
)

_TWINS: dict[type, type[msgspec.Struct]] = {}


def is_pydantic_model(obj: object) -> bool:
    """Whether `obj` is a pydantic v2 BaseModel subclass (False when pydantic is not loaded)."""
    pydantic = sys.modules.get("pydantic")
    base = getattr(pydantic, "BaseModel", None)
    return base is not None and isinstance(obj, type) and issubclass(obj, base)


def pydantic_fields(cls: Any) -> list[tuple[str, object, object]]:
    """(name, annotation, default) of each field, in order; the annotation carries the
    field's constraints as msgspec.Meta and keeps its other metadata (a `Field(n)` pin).

    A `default_factory` is pydantic's to run, per call; the default given here only tells
    the schema the field may be left out (`[]` for `list`, else PER_CALL).
    """
    fields = []
    for name, info in cls.model_fields.items():
        if info.is_required():
            default: object = NO_DEFAULT
        elif info.default_factory is None:
            default = info.default
        else:
            default = _EMPTY.get(info.default_factory, PER_CALL)
        fields.append((name, _annotation(info.annotation, list(info.metadata)), default))
    return fields


class _PerCall:
    """The default of a field whose `default_factory` pydantic runs for each call."""

    def __repr__(self) -> str:
        return "set per call"


PER_CALL: Any = _PerCall()
_EMPTY: dict[object, object] = {list: [], dict: {}, set: set(), str: "", int: 0, float: 0.0}


def _annotation(annotation: Any, metadata: list[Any]) -> object:
    """The field's type with its constraints, inside `| None` (`float | None` with ge=0 is a
    float >= 0, or None)."""
    options = typing.get_args(annotation) if _is_union(annotation) else ()
    rest = [option for option in options if option is not type(None)]
    is_optional = len(options) == 2 and len(rest) == 1
    base = rest[0] if is_optional else annotation
    meta = _msgspec_meta(base, metadata)
    extras = (*([meta] if meta is not None else []), *metadata)
    annotated: Any = Annotated[(base, *extras)] if extras else base
    return annotated | None if is_optional else annotated


def _is_union(annotation: object) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def unresolved(cls: Any) -> bool:
    """A model whose annotations name classes pydantic could not find yet."""
    return not getattr(cls, "__pydantic_complete__", True)


_NUMERIC = ("gt", "ge", "lt", "le", "multiple_of")
_LENGTH = ("min_length", "max_length")
_SIZED = (str, bytes, list, dict, set, frozenset, tuple)


def _msgspec_meta(base: object, metadata: list[Any]) -> msgspec.Meta | None:
    """The annotated-types constraints pydantic keeps (Gt(0), MaxLen(3), a pattern) that
    msgspec can state for `base`, as Meta; the others are pydantic's alone to check."""
    bare = typing.get_origin(base) or base
    allowed: tuple[str, ...] = ()
    if bare in (int, float):
        allowed = _NUMERIC
    elif bare in _SIZED:
        allowed = (*_LENGTH, "pattern") if bare is str else _LENGTH
    found: dict[str, Any] = {}
    for item in metadata:
        for keyword in allowed:
            value = getattr(item, keyword, None)
            if value is not None and not callable(value):
                found[keyword] = value
    return msgspec.Meta(**found) if found else None


def json_twin(cls: Any) -> type[msgspec.Struct]:
    """A msgspec Struct with the model's fields: what wire values are checked against first.

    Nested pydantic models stay as they are; msgspec hands them back to `decode_hook`.
    """
    twin = _TWINS.get(cls)
    if twin is None:
        fields: list[Any] = []
        for name, annotation, default in pydantic_fields(cls):
            if default is NO_DEFAULT:
                fields.append((name, annotation))
            else:  # left out: pydantic applies the default (or runs the factory) itself
                fields.append((name, annotation, msgspec.UNSET))
        twin = msgspec.defstruct(cls.__name__, fields, forbid_unknown_fields=True, kw_only=True)
        _TWINS[cls] = twin
    return twin


def decode_hook(cls: type, value: Any) -> Any:
    """msgspec's dec_hook: a wire value (a dict) -> an instance of the pydantic model `cls`.

    Problems come out as msgspec would word them, with the path below `cls` kept.
    """
    if not is_pydantic_model(cls):
        raise NotImplementedError(f"{cls!r} is not a type blazerpc knows")
    try:
        checked = msgspec.convert(value, json_twin(cls), dec_hook=decode_hook)
    except msgspec.ValidationError as err:
        raise ValueError(str(err)) from None
    fields = {name: getattr(checked, name) for name in checked.__struct_fields__}
    fields = {name: value for name, value in fields.items() if value is not msgspec.UNSET}
    pydantic = sys.modules["pydantic"]
    try:
        return cls.model_validate(fields, by_alias=False, by_name=True)  # type: ignore[attr-defined]  # cls is a BaseModel
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = "".join(
            f"[{step}]" if isinstance(step, int) else f".{step}" for step in first["loc"]
        )
        message = first["msg"]
        raise ValueError(f"{message} - at `${where}`" if where else message) from None


def encode_hook(value: object) -> dict[str, Any]:
    """msgspec's enc_hook for a pydantic model: its fields by attribute name, values as they
    are (msgspec writes them, and calls back for nested models). TypeError for anything else."""
    if not is_pydantic_model(type(value)):
        raise TypeError(f"{type(value).__name__} is not a type blazerpc can write")
    return {name: getattr(value, name) for name in type(value).model_fields}  # type: ignore[attr-defined]  # a BaseModel


def schema_hook(found: set[type], ref_template: str) -> Any:
    """msgspec's schema_hook: a pydantic model is a reference to its twin's component;
    the models met are added to `found`, so the caller can add their twins' components."""

    def hook(cls: type) -> dict[str, Any]:
        if not is_pydantic_model(cls):
            raise NotImplementedError
        found.add(cls)
        return {"$ref": ref_template.format(name=cls.__name__)}

    return hook
