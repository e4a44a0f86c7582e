"""The lock file: the field numbers already published, so regenerating never renumbers a field.

It also records every enum's values, so `blaze proto --check` sees a value removed or
renumbered.

`blaze proto` writes `<app module>.blaze.lock` next to the app (JSON, sorted, one fact per
line, so a diff reads like a changelog); every later schema of the app is numbered from it:

- a field keeps its locked number, wherever its parameter moves;
- a new field gets the smallest number never used in its message;
- a removed field's number (and name) become `reserved` and are never used again;
- `Annotated[T, Field(7)]` pins a number by hand.

`breaking_changes()` compares a schema with the lock: what `blaze proto --check` reports.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec

from blazerpc.errors import DefinitionError
from blazerpc.schema.spec import (
    EnumSpec,
    FieldSpec,
    MessageKind,
    MessageSpec,
    ModelSpec,
    ServiceSpec,
)

__all__ = (
    "LOCK_SUFFIX",
    "Lock",
    "LockedField",
    "LockedMessage",
    "LockedRpc",
    "breaking_changes",
    "lock_of",
    "lock_path_for",
    "number_fields",
    "read_lock",
    "write_lock",
)

LOCK_SUFFIX = ".blaze.lock"


class LockedField(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A field as published: its number, its declared type, and whether callers must send it."""

    number: int
    type: str
    required: bool = False


class LockedMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A message's fields, and the removed ones whose numbers stay taken."""

    fields: dict[str, LockedField]
    reserved_numbers: list[int] = []
    reserved_names: list[str] = []


class LockedRpc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An rpc as published: the model behind it, its shape and its messages."""

    model: str
    shape: str
    request: str
    response: str


class Lock(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Everything a caller compiled against: rpcs, messages, field numbers, enum values."""

    package: str
    service: str
    rpcs: dict[str, LockedRpc]
    messages: dict[str, LockedMessage]
    enums: dict[str, dict[str, int]] = {}
    """Enum name -> its values' wire names -> their numbers."""


def lock_path_for(module_file: str | None) -> Path | None:
    """`app.py` -> `app.blaze.lock`, next to it; None for an app defined outside a file."""
    if not module_file or not module_file.endswith(".py"):
        return None
    path = Path(module_file)
    return path.with_name(path.stem + LOCK_SUFFIX)


def read_lock(path: Path | None) -> Lock | None:
    """The lock at `path`, or None if there is none yet."""
    if path is None or not path.is_file():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=Lock)
    except msgspec.DecodeError as err:
        raise DefinitionError(
            f"lock file {path}: {err}. It is written by `blaze proto`; restore it from "
            "version control rather than editing it."
        ) from None


def write_lock(path: Path, lock: Lock) -> None:
    """Write `lock` as sorted, indented JSON (stable diffs)."""
    data = msgspec.json.format(msgspec.json.encode(lock, order="sorted"), indent=2)
    path.write_bytes(data + b"\n")


def number_fields(schema: ServiceSpec, lock: Lock | None) -> ServiceSpec:
    """The schema with every field numbered from `lock`, pins and the rules above."""
    messages = {
        message.name: _numbered(message, lock.messages.get(message.name) if lock else None)
        for message in schema.messages
    }
    models = tuple(_with_messages(model, messages) for model in schema.models)
    return dataclasses.replace(
        schema, models=models, messages=tuple(messages[m.name] for m in schema.messages)
    )


def lock_of(schema: ServiceSpec) -> Lock:
    """What to write after publishing `schema` (already numbered by number_fields)."""
    return Lock(
        package=schema.package,
        service=schema.name,
        rpcs={
            model.rpc_name: LockedRpc(
                model.name, model.shape.value, model.request.name, model.response.name
            )
            for model in schema.models
        },
        messages={
            message.name: LockedMessage(
                fields={
                    field.name: LockedField(
                        field.number, field.proto_type, _is_required(field, message)
                    )
                    for field in message.fields
                },
                reserved_numbers=list(message.reserved_numbers),
                reserved_names=list(message.reserved_names),
            )
            for message in schema.messages
        },
        enums={
            enum_spec.name: {value.name: value.number for value in enum_spec.values}
            for enum_spec in schema.enums
        },
    )


def breaking_changes(lock: Lock, schema: ServiceSpec) -> list[str]:
    """One line per change that breaks a caller built against `lock`; empty if compatible."""
    changes: list[str] = []
    current = {model.rpc_name: model for model in schema.models}
    for rpc, locked in lock.rpcs.items():
        model = current.get(rpc)
        if model is None:
            changes.append(f"rpc {rpc} (model {locked.model!r}) was removed")
            continue
        if model.shape.value != locked.shape:
            changes.append(
                f"rpc {rpc}: streaming shape changed from {locked.shape} to {model.shape.value}"
            )
        for role, old, new in (
            ("request", locked.request, model.request.name),
            ("response", locked.response, model.response.name),
        ):
            if old != new:
                changes.append(f"rpc {rpc}: {role} type changed from {old} to {new}")
    for message in schema.messages:
        old_message = lock.messages.get(message.name)
        if old_message is not None:
            changes.extend(_message_changes(message, old_message))
    for enum_spec in schema.enums:
        old_values = lock.enums.get(enum_spec.name)
        if old_values is not None:
            changes.extend(_enum_changes(enum_spec, old_values))
    return changes


def _enum_changes(enum_spec: EnumSpec, old: dict[str, int]) -> list[str]:
    """A value that disappears, or a number that changes meaning, breaks callers."""
    changes = []
    current = {value.name: value.number for value in enum_spec.values}
    old_names = {number: name for name, number in old.items()}
    for name, number in old.items():
        if name not in current:
            changes.append(
                f"enum {enum_spec.name}: value {name} ({number}) was removed; callers may "
                "still send it"
            )
        elif current[name] != number:
            changes.append(
                f"enum {enum_spec.name}: value {name} changed number from {number} to "
                f"{current[name]}"
            )
    for name, number in current.items():
        previous = old_names.get(number)
        if name not in old and previous is not None and previous not in current:
            changes.append(
                f"enum {enum_spec.name}: number {number} now means {name} (it was {previous})"
            )
    return changes


def _message_changes(message: MessageSpec, old: LockedMessage) -> list[str]:
    changes = []
    old_numbers = {f.number: f"field {name!r}" for name, f in old.fields.items()}
    old_numbers |= dict.fromkeys(old.reserved_numbers, "a removed field's")
    for field in message.fields:
        where = f"{message.name}.{field.name}"
        locked = old.fields.get(field.name)
        if locked is None:
            previous = old_numbers.get(field.number)
            if previous is not None:
                changes.append(f"{where}: number {field.number} reused (it was {previous})")
            if _is_required(field, message) and message.kind is not MessageKind.RESPONSE:
                changes.append(
                    f"{where}: new required field; old callers do not send it "
                    "(give it a default or make it `| None`)"
                )
            continue
        if locked.number != field.number:
            changes.append(f"{where}: number changed from {locked.number} to {field.number}")
        if locked.type != field.proto_type:
            changes.append(f"{where}: type changed from {locked.type} to {field.proto_type}")
    return changes


def _numbered(message: MessageSpec, locked: LockedMessage | None) -> MessageSpec:
    names = {field.name for field in message.fields}
    old_fields = locked.fields if locked else {}
    removed = {name: f.number for name, f in old_fields.items() if name not in names}
    reserved_numbers = set(locked.reserved_numbers if locked else ()) | set(removed.values())
    reserved_names = set(locked.reserved_names if locked else ()) | set(removed)
    pinned = {field.number for field in message.fields if field.is_pinned}
    kept = {f.name: old_fields[f.name].number for f in message.fields if f.name in old_fields}
    taken = pinned | set(kept.values()) | reserved_numbers
    fields = []
    for field in message.fields:
        if field.is_pinned:
            number = field.number
        elif field.name in kept:
            number = kept[field.name]
        else:
            number = _smallest_free(taken)
            taken.add(number)
        fields.append(dataclasses.replace(field, number=number))
    _check_unique(message, fields)
    in_use = {field.number for field in fields}
    return dataclasses.replace(
        message,
        fields=tuple(fields),
        reserved_numbers=tuple(sorted(reserved_numbers - in_use)),
        reserved_names=tuple(sorted(reserved_names - names)),
    )


def _smallest_free(taken: set[int]) -> int:
    number = 1
    while number in taken or 19000 <= number <= 19999:
        number += 1
    return number


def _check_unique(message: MessageSpec, fields: list[FieldSpec]) -> None:
    seen: dict[int, str] = {}
    for field in fields:
        other = seen.setdefault(field.number, field.name)
        if other != field.name:
            raise DefinitionError(
                f"message {message.name}: fields {other!r} and {field.name!r} both have number "
                f"{field.number}. Pin distinct numbers with Field(n), or drop one pin."
            )


def _with_messages(model: ModelSpec, messages: dict[str, MessageSpec]) -> ModelSpec:
    return dataclasses.replace(
        model,
        request=messages[model.request.name],
        response=messages[model.response.name],
        messages=tuple(messages[m.name] for m in model.messages),
    )


def _is_required(field: FieldSpec, message: MessageSpec) -> bool:
    return field.is_required and message.kind is not MessageKind.RESPONSE
