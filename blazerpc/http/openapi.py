"""What the HTTP gateway serves, described from the schema: `GET /models` and `/openapi.json`.

The JSON Schemas come from the same msgspec Structs that decode request bodies, so the
description and the validation cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blazerpc.schema.spec import ModelSpec, ServiceSpec, Shape, doc_summary
from blazerpc.wire.json import JsonCodec, json_schemas, schema_components

__all__ = ("model_listing", "openapi_document")

_ERROR_SCHEMA = {
    "type": "object",
    "description": "A failed call: the gRPC status name and what to fix.",
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    "required": ["code", "message"],
}
_JSON = "application/json"
_NDJSON = "application/x-ndjson"
_SSE = "text/event-stream"


def model_listing(schema: ServiceSpec, codecs: Mapping[str, JsonCodec]) -> dict[str, Any]:
    """`GET /models`: each model's name, shape, path, and request and response JSON Schemas."""
    return {
        "service": schema.full_name,
        "models": [
            {
                "name": model.name,
                "version": model.version,
                "shape": model.shape.value,
                "description": doc_summary(model.doc),
                "path": f"/models/{model.name}",
                "request_content_type": _request_type(model),
                "response_content_type": _response_type(model),
                "request": _standalone_schema(codecs[model.name].request_type),
                "response": _standalone_schema(codecs[model.name].response_type),
            }
            for model in schema.models
        ],
    }


def _standalone_schema(struct: type) -> dict[str, Any]:
    """The message's own JSON Schema at the top, the types it uses under `$defs`."""
    (ref,), found = schema_components([struct], "#/$defs/{name}")
    definitions = dict(found)
    top = dict(definitions.pop(ref["$ref"].rsplit("/", 1)[-1]))
    if definitions:
        top["$defs"] = definitions
    return top


def openapi_document(schema: ServiceSpec, codecs: Mapping[str, JsonCodec]) -> dict[str, Any]:
    """An OpenAPI 3.1 document of every route the gateway serves."""
    refs, definitions = json_schemas(codecs.values(), "#/components/schemas/{name}")
    error = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, Any] = {
        f"/models/{model.name}": {
            "post": _operation(model, refs[model.name], error),
            **_get(f"Describe model {model.name!r}: its shape and JSON Schemas."),
        }
        for model in schema.models
    }
    paths |= {
        "/models": _get("List the models, with JSON Schemas of their requests and responses."),
        "/health/live": _get("200 while the process runs."),
        "/health/ready": _get("200 while the server admits calls; 503 loading or draining."),
        "/openapi.json": _get("This document."),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": schema.full_name, "version": "1"},
        "paths": paths,
        "components": {"schemas": definitions | {"Error": _ERROR_SCHEMA}},
    }


def _operation(model: ModelSpec, refs: Mapping[str, Any], error: Mapping[str, Any]) -> Any:
    summary = doc_summary(model.doc) or f"Call model {model.name!r}."
    body_note = (
        " The body is newline-delimited JSON, one request object per line."
        if model.shape.is_client_streaming
        else ""
    )
    stream_note = (
        ' The answer is Server-Sent Events: one `data:` event per item ({"result": ...}), '
        'then `event: end`; a failure after the first event is `event: error` with {"code", '
        '"message"}.'
        if model.shape.is_server_streaming
        else ""
    )
    return {
        "operationId": "predict_" + model.name.replace("-", "_").replace(".", "_"),
        "summary": summary,
        "description": f"Shape: {model.shape.value}.{body_note}{stream_note}",
        "requestBody": {
            "required": True,
            "content": {_request_type(model): {"schema": refs["request"]}},
        },
        "responses": {
            "200": {
                "description": "The result.",
                "content": {_response_type(model): {"schema": refs["response"]}},
            },
            "default": {"description": "The call failed.", "content": {_JSON: {"schema": error}}},
        },
    }


def _get(summary: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": "OK", "content": {_JSON: {}}}},
        }
    }


def _request_type(model: ModelSpec) -> str:
    return _NDJSON if model.shape.is_client_streaming else _JSON


def _response_type(model: ModelSpec) -> str:
    return _SSE if model.shape in (Shape.SERVER_STREAMING, Shape.BIDIRECTIONAL) else _JSON
