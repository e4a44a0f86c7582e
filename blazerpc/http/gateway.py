"""The HTTP/JSON gateway: every model of an app over HTTP, through the same calls as gRPC.

- `POST /models/{name}`: the body is a JSON object of the request fields (newline-delimited
  JSON objects for a model that takes a client stream). Unary and client-streaming models
  answer JSON `{"result": ...}`; streaming models answer Server-Sent Events, one `data:` event
  per item and a final `event: end`.
- `GET /models/{name}/ws`: a WebSocket, one JSON message per item each way (bidirectional).
- `GET /models` (and `GET /models/{name}` for one), `GET /openapi.json`, `GET /health/live`,
  `GET /health/ready`.

Every call passes the same Boundary as over gRPC (admission, limits, drain, metrics, access
log). Its status becomes an HTTP status (`HTTP_STATUS`) with a JSON body `{code, message}` if
nothing was sent yet, else an `event: error` with that JSON, and the stream ends cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence

import msgspec
from grpclib.exceptions import GRPCError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from blazerpc.errors import UnknownModelError, to_status
from blazerpc.http.answer import (
    EventAnswer,
    JsonAnswer,
    error_body,
    failure_response,
    route_error_body,
    send_failure,
    status_of_http,
)
from blazerpc.http.body import NdjsonLines, OneDocument, Receive
from blazerpc.http.keys import RequireKeys
from blazerpc.http.openapi import model_listing, openapi_document
from blazerpc.http.port import AnswerKind, HttpPort, RequestsKind, Scope, run_http_call, uncancel
from blazerpc.http.requestids import RequestIds
from blazerpc.http.sse import Send
from blazerpc.http.websocket import WebSocketPort, close_websocket
from blazerpc.runtime.admission import Admission
from blazerpc.runtime.boundary import Boundary, Limits
from blazerpc.schema.spec import ServiceSpec, Shape
from blazerpc.security.keys import ApiKeys
from blazerpc.security.requestids import REQUEST_ID
from blazerpc.wire.json import JsonCodec

__all__ = ("Gateway",)

_PROBES = ("/health/live", "/health/ready")
"""The gateway's own liveness and readiness routes: open to probes when calls need a key."""


class Gateway:
    """The ASGI app serving one schema's models over HTTP; `.asgi` is what a server runs.

    `routes` are a protocol layer's own (the Open Inference REST routes): the server mounts
    them here, so the gateway knows no protocol but its own.
    """

    def __init__(
        self,
        schema: ServiceSpec,
        calls: Mapping[str, Boundary],
        codecs: Mapping[str, JsonCodec],
        limits: Limits,
        admission: Admission,
        *,
        keepalive_s: float,
        lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]] | None = None,
        routes: Sequence[BaseRoute] = (),
        cors_origins: Sequence[str] = (),
        keys: ApiKeys | None = None,
        probe_paths: Sequence[str] = (),
    ) -> None:
        self._admission = admission
        listing = model_listing(schema, codecs)
        self._listing = msgspec.json.encode(listing)
        self._entries = {entry["name"]: msgspec.json.encode(entry) for entry in listing["models"]}
        self._openapi = msgspec.json.encode(openapi_document(schema, codecs))
        endpoint = _ModelEndpoint(calls, codecs, limits, keepalive_s)
        self.asgi = Starlette(
            routes=[
                Route("/models", self._models, methods=["GET"]),
                Route("/models/{name}", endpoint, methods=["POST"]),
                Route("/models/{name}", self._model, methods=["GET"]),
                WebSocketRoute("/models/{name}/ws", endpoint.websocket),
                Route("/models/{name}/ws", _not_a_websocket, methods=["GET"]),
                Route("/openapi.json", self._openapi_json, methods=["GET"]),
                Route(_PROBES[0], self._live, methods=["GET"]),
                Route(_PROBES[1], self._ready, methods=["GET"]),
                *routes,
            ],
            exception_handlers={HTTPException: _off_the_routes},
            middleware=[  # the first is outermost: CORS answers before keys are asked for
                Middleware(RequestIds),
                *_cors(cors_origins),
                *_keys(keys, [*_PROBES, *probe_paths]),
            ],
            lifespan=lifespan,
        )

    async def _models(self, request: Request) -> Response:
        return Response(self._listing, media_type="application/json")

    async def _model(self, request: Request) -> Response:
        name = request.path_params["name"]
        entry = self._entries.get(name)
        if entry is None:
            return failure_response(UnknownModelError.no_model(name, self._entries), name)
        return Response(entry, media_type="application/json")

    async def _openapi_json(self, request: Request) -> Response:
        return Response(self._openapi, media_type="application/json")

    async def _live(self, request: Request) -> Response:
        return Response(b'{"status":"live"}', media_type="application/json")

    async def _ready(self, request: Request) -> Response:
        phase = self._admission.phase
        body = msgspec.json.encode({"status": phase.value})
        code = 200 if self._admission.is_ready else 503
        return Response(body, status_code=code, media_type="application/json")


async def _off_the_routes(request: Request, error: Exception) -> Response:
    """A request no route takes (404, 405), as JSON in its route family's shape."""
    assert isinstance(error, HTTPException)
    path, method = request.url.path, request.method
    allowed = (error.headers or {}).get("Allow", "")
    message = {
        404: f"there is no route {method} {path}; see GET /models and /openapi.json.",
        405: f"{method} is not allowed on {path}; use {allowed}.",
    }.get(error.status_code, f"{error.status_code}: {error.detail}")
    if path.startswith("/v2") and error.status_code == 404:
        message = f"there is no route {method} {path}."
    return Response(
        route_error_body(path, status_of_http(error.status_code), message),
        status_code=error.status_code,
        headers=error.headers,
        media_type="application/json",
    )


async def _not_a_websocket(request: Request) -> Response:
    """A plain GET on a WebSocket route: 426, saying how to connect."""
    path = request.url.path
    message = f"{path} is a WebSocket: connect with a WebSocket client (Upgrade: websocket)."
    return Response(
        error_body(status_of_http(426), message),
        status_code=426,
        headers={"Upgrade": "websocket"},
        media_type="application/json",
    )


def _keys(keys: ApiKeys | None, open_paths: Sequence[str]) -> list[Middleware]:
    """Every route needs an API key but the probes, when the server has keys."""
    return [] if keys is None else [Middleware(RequireKeys, keys=keys, open_paths=open_paths)]


def _cors(origins: Sequence[str]) -> list[Middleware]:
    """Let pages from `origins` call the gateway from a browser (starlette's CORS middleware)."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=["*"],  # content-type, authorization, x-request-timeout, metadata
            expose_headers=["retry-after", "www-authenticate", REQUEST_ID],
            max_age=3600,
        )
    ]


def _kinds(shape: Shape) -> tuple[RequestsKind, AnswerKind]:
    """A model's shape decides the route's body and answer: NDJSON in, events out, or JSON."""
    requests: RequestsKind = NdjsonLines if shape.is_client_streaming else OneDocument
    answer: AnswerKind = EventAnswer if shape.is_server_streaming else JsonAnswer
    return requests, answer


class _ModelEndpoint:
    """`POST /models/{name}` as a plain ASGI app: it writes the response itself, event by event."""

    def __init__(
        self,
        calls: Mapping[str, Boundary],
        codecs: Mapping[str, JsonCodec],
        limits: Limits,
        keepalive_s: float,
    ) -> None:
        self._calls = calls
        self._codecs = codecs
        self._limits = limits
        self._keepalive_s = keepalive_s
        self._kinds = {name: _kinds(boundary.model.shape) for name, boundary in calls.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path_params"]["name"]
        boundary = self._calls.get(name)
        if boundary is None:
            await send_failure(send, self._unknown(name), name)
            return
        requests, answer = self._kinds[name]
        port = HttpPort(
            scope,
            receive,
            send,
            self._codecs[name],
            self._limits,
            self._keepalive_s,
            requests=requests,
            answer=answer,
        )
        await run_http_call(boundary, port)

    async def websocket(self, websocket: WebSocket) -> None:
        """`/models/{name}/ws`: one JSON message per item each way; an empty one ends input."""
        name = websocket.path_params["name"]
        boundary = self._calls.get(name)
        await websocket.accept()
        if boundary is None:
            await close_websocket(websocket, *to_status(self._unknown(name), name))
            return
        port = WebSocketPort(websocket, self._codecs[name], self._limits)
        try:
            await boundary.run(port)
        except GRPCError as error:
            await close_websocket(websocket, error.status, error.message or "")
            return
        except asyncio.CancelledError:
            if not port.is_disconnected:
                raise
            uncancel()
            return
        await websocket.close()

    def _unknown(self, name: str) -> UnknownModelError:
        return UnknownModelError.no_model(name, self._calls, see="See GET /models.")
