"""The Open Inference Protocol's REST half (KServe v2), on the HTTP gateway's port.

- `GET /v2`, `/v2/health/live`, `/v2/health/ready`: server metadata and health.
- `GET /v2/models/{m}[/versions/{v}]` and `.../ready`: a model's metadata and readiness.
- `POST .../infer`: a KServe v2 inference request (`inputs` with name, datatype, shape, data),
  answered with an inference response; `.../infer_stream` answers Server-Sent Events, one
  inference response per item (MLServer's streaming endpoint).
- `POST .../generate` and `.../generate_stream`: Triton's generate extension, a flat JSON
  object of inputs (`{"prompt": "hi"}`) answered with a flat object of outputs, once or as
  events. A body with `inputs` is read as a KServe request there too, as MLServer does.

Every call passes the same Boundary as everywhere else; errors follow the gateway's rules
(an HTTP status with `{code, message}` before the first byte, `event: error` after it).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from blazerpc.errors import (
    UnknownModelError,
    UnsupportedCallError,
    WireError,
)
from blazerpc.http.answer import (
    EventAnswer,
    JsonAnswer,
    failure_response,
    open_inference_error_body,
    open_inference_error_event,
    send_failure,
)
from blazerpc.http.body import OneDocument, Receive
from blazerpc.http.port import AnswerKind, HttpPort, Scope, run_http_call
from blazerpc.http.sse import Send
from blazerpc.openinference.tensors import ModelTensors
from blazerpc.runtime.admission import Admission
from blazerpc.runtime.boundary import Boundary, Limits
from blazerpc.schema.pydantic_models import encode_hook
from blazerpc.schema.spec import ModelSpec
from blazerpc.wire.json import JsonCodec

__all__ = ("PROBE_PATHS", "open_inference_routes")

_ENCODER = msgspec.json.Encoder(enc_hook=encode_hook)  # pydantic results of generate
_HEADER_SIZE = b"inference-header-content-length"
_VERSIONED = "/v2/models/{model}/versions/{version}"
PROBE_PATHS = (
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{model}/ready",
    f"{_VERSIONED}/ready",
)
"""The liveness and readiness routes: open to probes when calls need an API key."""
_ACTIONS = {
    "infer": (False, False),
    "infer_stream": (False, True),
    "generate": (True, False),
    "generate_stream": (True, True),
}
"""action -> (flat JSON like Triton's generate, answered as events)."""


def open_inference_routes(
    tensors: Mapping[str, ModelTensors],
    calls: Mapping[str, Boundary],
    codecs: Mapping[str, JsonCodec],
    admission: Admission,
    limits: Limits,
    keepalive_s: float,
    *,
    lists_names: bool = True,
) -> list[BaseRoute]:
    """The `/v2/...` routes over the same calls as the gateway's own.

    `lists_names` off (calls need a key): an unknown model's answer does not list the served
    ones, since the readiness routes answer anyone.
    """
    models = _Models(tensors, calls, codecs, admission, limits, keepalive_s, lists_names)
    live, ready = PROBE_PATHS[:2]
    routes: list[BaseRoute] = [
        Route("/v2", models.server_metadata, methods=["GET"]),
        Route(live, models.live, methods=["GET"]),
        Route(ready, models.ready, methods=["GET"]),
    ]
    for prefix in ("/v2/models/{model}", _VERSIONED):
        routes += [
            Route(prefix, models.metadata, methods=["GET"]),
            Route(f"{prefix}/ready", models.model_ready, methods=["GET"]),
            *(
                Route(f"{prefix}/{action}", _Infer(models, action), methods=["POST"])
                for action in _ACTIONS
            ),
        ]
    return routes


class _Models:
    """The models behind the routes, and the small GET answers."""

    def __init__(
        self,
        tensors: Mapping[str, ModelTensors],
        calls: Mapping[str, Boundary],
        codecs: Mapping[str, JsonCodec],
        admission: Admission,
        limits: Limits,
        keepalive_s: float,
        lists_names: bool,
    ) -> None:
        self.tensors = tensors
        self.calls = calls
        self.codecs = codecs
        self.admission = admission
        self.limits = limits
        self.keepalive_s = keepalive_s
        self.lists_names = lists_names

    def find(self, path_params: Mapping[str, str]) -> tuple[ModelTensors | None, str]:
        """The model a path names, or None and what is wrong."""
        name = path_params["model"]
        tensors = self.tensors.get(name)
        if tensors is None:
            served = self.tensors if self.lists_names else None
            return None, str(UnknownModelError.no_model(name, served))
        version = tensors.model.version
        model_version = path_params.get("version", version)
        if model_version != version:
            return None, (
                f"model {name!r} has no version {model_version!r}; it has version {version!r}."
            )
        return tensors, ""

    async def server_metadata(self, request: Request) -> Response:
        return _json(
            {"name": "blazerpc", "version": version("blazerpc"), "extensions": ["infer_stream"]}
        )

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        is_ready = self.admission.is_ready
        return _json({"ready": is_ready}, 200 if is_ready else 503)

    async def metadata(self, request: Request) -> Response:
        tensors, problem = self.find(request.path_params)
        if tensors is None:
            return _not_found(problem)
        return _json(
            {
                "name": tensors.model.name,
                "versions": [tensors.model.version],
                "platform": "blazerpc",
                "inputs": [_metadata(spec) for spec in tensors.inputs.values()],
                "outputs": [_metadata(spec) for spec in tensors.outputs.values()],
            }
        )

    async def model_ready(self, request: Request) -> Response:
        tensors, problem = self.find(request.path_params)
        if tensors is None:
            return _not_found(problem)
        is_ready = self.admission.is_model_ready(tensors.model.name)
        return _json({"name": tensors.model.name, "ready": is_ready}, 200 if is_ready else 503)


class _Infer:
    """`POST .../infer` and its kin, as a plain ASGI app writing its own answer."""

    def __init__(self, models: _Models, action: str) -> None:
        self._models = models
        self._action = action
        allows_flat, self._streams = _ACTIONS[action]
        self._json = {
            name: _InferenceJson(tensors, models.codecs[name], allows_flat=allows_flat)
            for name, tensors in models.tensors.items()
        }
        # each event must parse as an inference response: clients loop over them all
        self._answer: AnswerKind = (
            functools.partial(
                EventAnswer,
                ends_with_event=False,
                errors=open_inference_error_body,
                event_errors=open_inference_error_event,
            )
            if self._streams
            else functools.partial(JsonAnswer, errors=open_inference_error_body)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        models = self._models
        tensors, problem = models.find(scope["path_params"])
        name = scope["path_params"]["model"]
        if tensors is None:
            await send_failure(
                send, UnknownModelError(problem), name, body=open_inference_error_body
            )
            return
        model = tensors.model
        if model.shape.is_server_streaming and not self._streams:
            message = (
                f"model {model.name!r} streams its results; POST to "
                f".../{self._action}_stream instead."
            )
            await send_failure(
                send, UnsupportedCallError(message), name, body=open_inference_error_body
            )
            return
        header_size = dict(scope["headers"]).get(_HEADER_SIZE)
        port = HttpPort(
            scope,
            receive,
            send,
            _Exchange(self._json[model.name], header_size),
            models.limits,
            models.keepalive_s,
            requests=OneDocument,
            answer=self._answer,
        )
        await run_http_call(models.calls[model.name], port)


@dataclass(frozen=True, slots=True)
class _Asked:
    """What one inference request asked for, which decides how its responses are written."""

    id: str = ""
    outputs: tuple[str, ...] = ()
    is_flat: bool = False


class _InferenceJson:
    """One model's inference JSON on one route: KServe v2 (or flat) requests in, responses out.

    Built once per model and route at start-up; it keeps nothing of any call.
    """

    def __init__(self, tensors: ModelTensors, codec: JsonCodec, *, allows_flat: bool) -> None:
        self.tensors = tensors
        self._codec = codec
        self._allows_flat = allows_flat

    @property
    def model(self) -> ModelSpec:
        return self.tensors.model

    def read(self, body: bytes, header_size: bytes | None) -> tuple[dict[str, Any], _Asked]:
        """The request's fields, and what it asked for."""
        body, binary = _split(body, header_size)
        try:
            document = msgspec.json.decode(body or b"{}")
        except msgspec.DecodeError as err:
            raise WireError(f"the request is not valid JSON ({err}).") from None
        if not isinstance(document, dict):
            raise WireError("the request must be a JSON object.")
        identifier = document.pop("id", "")  # null, as MLServer's clients send: none
        identifier = identifier if isinstance(identifier, str) else ""
        document.pop("parameters", None)
        if "inputs" not in document:
            if not self._allows_flat:
                raise WireError(
                    "the request has no `inputs`: send "
                    '{"inputs": [{"name": ..., "datatype": ..., "shape": [...], "data": [...]}]}.'
                )
            return self._codec.decode_document(document), _Asked(identifier, is_flat=True)
        inputs = document["inputs"]
        if not isinstance(inputs, list) or not all(isinstance(item, dict) for item in inputs):
            raise WireError("`inputs` must be a list of tensor objects.")
        outputs = document.get("outputs") or []  # null: every output, as when left out
        if not isinstance(outputs, list):
            raise WireError('`outputs` must be a list of {"name": ...} objects.')
        asked = _Asked(
            identifier, tuple(str(item.get("name")) for item in outputs if isinstance(item, dict))
        )
        return self.tensors.read_json_inputs(inputs, _binary_inputs(inputs, binary)), asked

    def write(self, result: object, asked: _Asked) -> bytes:
        """One inference response (or one event of a stream) for a request that asked so."""
        response: dict[str, Any] = {
            "model_name": self.model.name,
            "model_version": self.model.version,
        }
        if asked.id:
            response["id"] = asked.id
        requested = list(asked.outputs)
        if asked.is_flat:
            response |= self.tensors.named_outputs(result, requested)
        else:
            response["outputs"] = self.tensors.write_json_outputs(result, requested)
        return _ENCODER.encode(response)


class _Exchange:
    """One call's bodies (a BodyCodec for its HttpPort): it remembers what the request asked."""

    __slots__ = ("_asked", "_header_size", "_json")

    def __init__(self, json: _InferenceJson, header_size: bytes | None) -> None:
        self._json = json
        self._header_size = header_size
        self._asked = _Asked()

    @property
    def model(self) -> ModelSpec:
        return self._json.model

    def decode(self, body: bytes) -> dict[str, Any]:
        fields, self._asked = self._json.read(body, self._header_size)
        return fields

    def encode(self, result: object) -> bytes:
        return self._json.write(result, self._asked)


def _split(body: bytes, header_size: bytes | None) -> tuple[bytes, bytes]:
    """The binary data extension: a JSON header of the declared size, then raw tensors."""
    if header_size is None:
        return body, b""
    try:
        size = int(header_size)
    except ValueError:
        size = -1
    if not 0 <= size <= len(body):
        raise WireError(
            f"header Inference-Header-Content-Length is {header_size.decode()!r}; "
            f"it must be the size of the JSON part, at most the {len(body)}-byte body."
        )
    return body[:size], body[size:]


def _binary_inputs(inputs: list[dict[str, Any]], binary: bytes) -> dict[str, bytes]:
    """Each input's slice of the binary part, in the order of `inputs`."""
    slices: dict[str, bytes] = {}
    offset = 0
    for tensor in inputs:
        parameters = tensor.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise WireError(
                f"input {tensor.get('name')!r} declares binary_data_size {size!r}, but the "
                f"binary part has {len(binary) - offset} bytes left."
            )
        slices[str(tensor.get("name"))] = binary[offset : offset + size]
        offset += size
    if offset != len(binary):
        raise WireError(f"the binary part has {len(binary) - offset} bytes no input declares.")
    return slices


def _metadata(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _json(document: object, status: int = 200) -> Response:
    return Response(_ENCODER.encode(document), status_code=status, media_type="application/json")


def _not_found(message: str) -> Response:
    return failure_response(UnknownModelError(message), "-", body=open_inference_error_body)
