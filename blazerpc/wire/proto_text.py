"""Schema -> `.proto` text, rendered from the jinja2 templates shipped as blazerpc.templates."""

from __future__ import annotations

import enum
from typing import Any

import jinja2

from blazerpc.schema.spec import FieldSpec, MessageKind, MessageSpec, ServiceSpec

__all__ = ("render_proto",)

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("blazerpc.templates", "."),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def render_proto(schema: ServiceSpec) -> str:
    """The `.proto` text of a schema; protoc compiles it to the same descriptor we build."""
    template = _environment.get_template("service.proto.j2")
    return template.render(
        package=schema.package,
        service=schema.name,
        imports=schema.imports,
        rpcs=[
            {
                "name": model.rpc_name,
                "comment": model.doc,
                "request": model.request.name,
                "response": model.response.name,
                "client_streaming": model.shape.is_client_streaming,
                "server_streaming": model.shape.is_server_streaming,
            }
            for model in schema.models
        ],
        messages=[_message(message) for message in schema.messages],
        enums=[
            {
                "name": spec.name,
                "comment": spec.doc,
                "constants": [{"name": v.name, "number": v.number} for v in spec.values],
            }
            for spec in schema.enums
        ],
    )


def _message(message: MessageSpec) -> dict[str, Any]:
    return {
        "name": message.name,
        "comment": message.doc,
        "fields": [
            {
                "type": spec.proto_type,
                "name": spec.name,
                "number": spec.number,
                "comment": _field_comment(spec, message.kind),
            }
            for spec in message.fields
        ],
        "reserved_numbers": list(message.reserved_numbers),
        "reserved_names": list(message.reserved_names),
    }


def _field_comment(spec: FieldSpec, kind: MessageKind) -> str:
    """What a stock client needs to know that proto3 cannot say: required fields, defaults."""
    notes = []
    if kind in (MessageKind.REQUEST, MessageKind.STRUCT):
        if spec.is_required:
            notes.append("required")
        elif spec.has_default and spec.default is not None:
            notes.append(f"default {_literal(spec.default)}")
    notes.extend(f"{name} {_literal(value)}" for name, value in spec.constraints)
    if spec.tensor is not None:
        notes.append(spec.tensor.describe())
    return "; ".join(notes)


def _literal(value: object) -> str:
    if isinstance(value, enum.Enum):
        return str(value.name)
    return repr(value)
