"""The OpenAI-compatible routes on the HTTP gateway's port, under `/v1` and `/openai/v1`.

- `POST /chat/completions` and `POST /completions`: the request's `model` picks a model
  registered with `openai="chat"` / `"completions"`; its items (str or Chunk) become a
  `chat.completion` / `text_completion`, or with `stream: true` one `data:` event per item
  (`chat.completion.chunk`), a last one with `finish_reason`, the usage if
  `stream_options.include_usage`, then `data: [DONE]`.
- `POST /embeddings`: a model registered with `openai="embeddings"`; float vectors, or
  base64 of little-endian float32 when `encoding_format` is "base64" (the openai client's
  default).
- `GET /models`, `GET /models/{model}`: the models served on these routes.

Every call passes the same Boundary as everywhere else (admission, limits, drain, metrics,
access log, auth). Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}`:
an HTTP status before the stream, a `data:` event inside it (the openai client raises
APIError with our message), and `x-should-retry: false` where a retry cannot help.
"""

from __future__ import annotations

import array
import asyncio
import base64
import functools
import sys
import time
from collections.abc import Mapping
from typing import Any, cast

import msgspec
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from blazerpc.context import Context
from blazerpc.errors import (
    BlazeError,
    ResultError,
    UnknownModelError,
    WireError,
    cancelled_status,
    to_status,
)
from blazerpc.http.answer import (
    HTTP_STATUS,
    OPENAI_PREFIXES,
    body_http_status,
    failure_response,
    openai_error_body,
    send_json,
)
from blazerpc.http.body import Decode, Receive, RequestBody
from blazerpc.http.port import HttpPort, Scope, run_http_call, scope_peer, uncancel
from blazerpc.http.requestids import scope_request_id
from blazerpc.http.sse import EventStream, Send
from blazerpc.openai.mapping import Kind, request_fields
from blazerpc.openai.types import Chunk
from blazerpc.runtime.boundary import Boundary, Limits
from blazerpc.schema.spec import ModelSpec
from blazerpc.wire.json import JsonCodec

__all__ = ("openai_routes",)

_RETRY_HELPS = frozenset({429, 503})
"""Statuses a retry can fix (a full queue, a server loading or draining)."""
_DONE = b"[DONE]"
_ENCODER = msgspec.json.Encoder()
_LITTLE = sys.byteorder == "little"


def openai_routes(
    calls: Mapping[str, Boundary],
    codecs: Mapping[str, JsonCodec],
    limits: Limits,
    keepalive_s: float,
) -> list[BaseRoute]:
    """The routes, for the models registered with `openai=`; none if there are no such models."""
    served = {name: call for name, call in calls.items() if call.model.openai is not None}
    if not served:
        return []
    listing = _Listing(served)
    routes: list[BaseRoute] = []
    for prefix in OPENAI_PREFIXES:
        routes += [
            Route(f"{prefix}models", listing.all, methods=["GET"]),
            Route(f"{prefix}models/{{model}}", listing.one, methods=["GET"]),
            *(
                Route(
                    f"{prefix}{path}",
                    _Endpoint(kind, served, codecs, limits, keepalive_s),
                    methods=["POST"],
                )
                for kind, path in _PATHS.items()
            ),
        ]
    return routes


_PATHS = {
    Kind.CHAT: "chat/completions",
    Kind.COMPLETIONS: "completions",
    Kind.EMBEDDINGS: "embeddings",
}


class _Listing:
    """`GET /v1/models`: what the openai client's `models.list()` reads."""

    def __init__(self, served: Mapping[str, Boundary]) -> None:
        self._entries = {
            name: {"id": name, "object": "model", "created": 0, "owned_by": "blazerpc"}
            for name in served
        }

    async def all(self, request: Request) -> Response:
        body = _ENCODER.encode({"object": "list", "data": list(self._entries.values())})
        return Response(body, media_type="application/json")

    async def one(self, request: Request) -> Response:
        name = request.path_params["model"]
        entry = self._entries.get(name)
        if entry is None:
            error = UnknownModelError.no_model(name, self._entries)
            return failure_response(error, name, body=openai_error_body)
        return Response(_ENCODER.encode(entry), media_type="application/json")


class _Endpoint:
    """One POST route, as a plain ASGI app: reads the request, picks the model, runs the call."""

    def __init__(
        self,
        kind: Kind,
        served: Mapping[str, Boundary],
        codecs: Mapping[str, JsonCodec],
        limits: Limits,
        keepalive_s: float,
    ) -> None:
        self._kind = kind
        self._served = served
        self._calls = {
            name: call for name, call in served.items() if call.model.openai == kind.value
        }
        self._codecs = codecs
        self._limits = limits
        self._keepalive_s = keepalive_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        body = RequestBody(receive, self._limits, headers.get(b"content-length", b"").decode())
        try:
            document = _document(await body.read_all())
            boundary = self._boundary(document.get("model"))
        except asyncio.CancelledError:
            if not body.is_disconnected:
                raise
            uncancel()
            return
        except BlazeError as err:
            status, message = to_status(err, str(scope["path"]))
            http_status = body_http_status(
                status, has_stalled=body.has_stalled, is_too_large=body.is_too_large
            )
            await _send_error(send, status, message, http_status)
            return
        model = boundary.model
        inputs = document.get("input")
        if self._kind is Kind.EMBEDDINGS and _takes_one_input(model) and isinstance(inputs, list):
            await self._embed_each(scope, send, boundary, document, inputs)
            return
        is_streamed = document.get("stream") is True
        options = document.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        exchange = _Exchange(
            self._kind, model, self._codecs[model.name], document, is_streamed, wants_usage
        )
        port = HttpPort(
            scope,
            receive,
            send,
            exchange,
            self._limits,
            self._keepalive_s,
            requests=functools.partial(_Taken, exchange.fields),
            answer=functools.partial(_Answer, exchange=exchange),
        )
        exchange.request_id = port.request_id
        await run_http_call(boundary, port)

    async def _embed_each(
        self,
        scope: Scope,
        send: Send,
        boundary: Boundary,
        document: dict[str, Any],
        inputs: list[Any],
    ) -> None:
        """A list of inputs for a model that embeds one: one call per input, all at once, so
        a batched model groups them (with other requests' inputs too)."""
        model = boundary.model
        exchange = _Exchange(self._kind, model, self._codecs[model.name], document, False, False)
        request_id = scope_request_id(scope)
        # a batch's worth in flight at a time: a request of 2048 inputs fills no queue
        in_flight = asyncio.Semaphore(model.batching.max_size if model.batching else 32)
        ports = [
            _InputPort(scope, request_id, exchange, index, item)
            for index, item in enumerate(inputs)
        ]
        failures: list[GRPCError] = []
        try:
            async with asyncio.TaskGroup() as calls:
                for port in ports:
                    calls.create_task(_run_within(in_flight, boundary, port))
        except* GRPCError as failed:
            failures += [cast(GRPCError, error) for error in failed.exceptions]
        if failures:
            error = failures[0]
            await _send_error(send, error.status, error.message or "", None)
            return
        exchange.vectors = [port.vector for port in ports]
        await send_json(send, 200, exchange.whole())

    def _boundary(self, name: object) -> Boundary:
        if not isinstance(name, str):
            raise WireError("field 'model': name the model to call, a string (GET /v1/models).")
        boundary = self._calls.get(name)
        if boundary is not None:
            return boundary
        elsewhere = self._served.get(name)
        if elsewhere is not None and elsewhere.model.openai is not None:
            path = _PATHS[Kind(elsewhere.model.openai)]
            raise UnknownModelError(
                f"model {name!r} is served on /v1/{path}, not /v1/{_PATHS[self._kind]}; "
                "send the request there."
            )
        raise UnknownModelError.no_model(name, self._calls, see="See GET /v1/models.")


async def _run_within(slots: asyncio.Semaphore, boundary: Boundary, port: _InputPort) -> None:
    async with slots:
        await boundary.run(port)


def _takes_one_input(model: ModelSpec) -> bool:
    """The model's `input` is one string (a batched model's always is, per call)."""
    return any(f.name == "input" and f.annotation is str for f in model.request.fields)


class _InputPort:
    """One input of an embeddings request, as a call of its own (a CallPort)."""

    transport = "http"

    def __init__(
        self, scope: Scope, request_id: str, exchange: _Exchange, index: int, item: object
    ) -> None:
        self._scope = scope
        self.request_id = request_id
        self._exchange = exchange
        self._index = index
        self._item = item
        self._is_taken = False
        self.vector: list[float] = []

    @property
    def peer(self) -> str | None:
        return scope_peer(self._scope)

    @property
    def deadline(self) -> float | None:
        return None

    def context(self) -> Context:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self._scope["headers"]}
        return Context(headers, peer=self.peer, request_id=self.request_id)

    def cancelled_status(self) -> Status:
        return cancelled_status(is_past_deadline=False)

    async def receive(self) -> dict[str, Any] | None:
        if self._is_taken:
            return None
        self._is_taken = True
        try:
            return self._exchange.fields_of({**self._exchange.document, "input": self._item})
        except WireError as err:
            where = f"field 'input[{self._index}]'"
            raise WireError(str(err).replace("field 'input'", where)) from None

    async def send(self, result: object) -> None:
        if not isinstance(result, list):
            raise ResultError(f"expected a vector (list[float]), got {type(result).__name__}")
        self.vector = result


def _document(body: bytes) -> dict[str, Any]:
    try:
        document = msgspec.json.decode(body or b"{}")
    except msgspec.DecodeError as err:
        raise WireError(f"the request is not valid JSON ({err}).") from None
    if not isinstance(document, dict):
        raise WireError("the request must be a JSON object.")
    return document


class _Taken:
    """The request message, already read (the model's name is in the body)."""

    def __init__(self, fields: Decode, body: RequestBody) -> None:
        self._fields = fields
        self.is_exhausted = False

    async def next(self, decode: Decode) -> dict[str, Any] | None:
        if self.is_exhausted:
            return None
        self.is_exhausted = True
        return self._fields(b"")


class _Exchange:
    """One call's request and response (a BodyCodec for its HttpPort): what the request asked,
    and what the model has produced so far."""

    def __init__(
        self,
        kind: Kind,
        model: ModelSpec,
        codec: JsonCodec,
        document: dict[str, Any],
        is_streamed: bool,
        wants_usage: bool,
    ) -> None:
        self.kind = kind
        self.model = model
        self._codec = codec
        self.document = document
        self.is_streamed = is_streamed and kind is not Kind.EMBEDDINGS
        self.wants_usage = wants_usage
        self.request_id = ""
        self.created = int(time.time())
        self.items = 0
        self.texts: list[str] = []
        self.vectors: Any = None
        self.finish_reason: str | None = None
        self.prompt_tokens = 0
        self._max_tokens: object = None
        self._head = b""

    def fields(self, _: bytes) -> dict[str, Any]:
        """The model's arguments from the request; WireError naming the field at fault."""
        fields = self.fields_of(self.document)
        self._max_tokens = fields.get("max_tokens")
        return fields

    def fields_of(self, document: dict[str, Any]) -> dict[str, Any]:
        """The model's arguments from a request document."""
        return self._codec.decode_document(request_fields(self.model, self.kind, document))

    def decode(self, body: bytes) -> dict[str, Any]:
        return self.fields(body)

    def encode(self, result: object) -> bytes:
        """One item: a chunk event when streamed, else kept for the whole response."""
        if self.kind is Kind.EMBEDDINGS:
            self.vectors = _vectors(result)
            return b""
        text = self._take(result)
        if not text:
            return b""  # a Chunk that only says why it stopped: no token, no event
        self.items += 1
        if not self.is_streamed:
            self.texts.append(text)
            return b""
        return self._chunk(_ENCODER.encode(text))

    def _take(self, result: object) -> str:
        if isinstance(result, str):
            return result
        if isinstance(result, Chunk):
            if result.finish_reason is not None:
                self.finish_reason = result.finish_reason
            if result.prompt_tokens is not None:
                self.prompt_tokens = result.prompt_tokens
            return result.text
        raise ResultError(f"expected str or Chunk, got {type(result).__name__}")

    @property
    def id(self) -> str:
        return f"{'chatcmpl' if self.kind is Kind.CHAT else 'cmpl'}-{self.request_id}"

    def _chunk(self, text: bytes, finish: bytes = b"null", *, role: bool = False) -> bytes:
        """A chunk event's JSON, written from a prefix made once: a token costs one encode."""
        if not self._head:
            kind = "chat.completion.chunk" if self.kind is Kind.CHAT else "text_completion"
            self._head = (
                b'{"id":%s,"object":"%s","created":%d,"model":%s,"choices":[{"index":0,'
                % (
                    _ENCODER.encode(self.id),
                    kind.encode(),
                    self.created,
                    _ENCODER.encode(self.model.name),
                )
            )
        usage = b',"usage":null' if self.wants_usage else b""
        if self.kind is Kind.CHAT:
            role_part = b'"role":"assistant",' if role else b""
            content = b'"delta":{%s"content":%s}' % (role_part, text) if text else b'"delta":{}'
            return self._head + content + b',"finish_reason":%s}]%s}' % (finish, usage)
        return self._head + b'"text":%s,"logprobs":null,"finish_reason":%s}]%s}' % (
            text or b'""',
            finish,
            usage,
        )

    def first_chunk(self) -> bytes | None:
        """The chat stream's opening event (the assistant's role, no text), as OpenAI sends."""
        return self._chunk(b'""', role=True) if self.kind is Kind.CHAT else None

    def last_chunks(self) -> list[bytes]:
        """The events after the last item: the finish reason, then the usage if asked."""
        finish = _ENCODER.encode(self._finish_reason())
        chunks = [self._chunk(b"", finish)]
        if self.wants_usage:
            head = self._head.split(b'"choices"')[0]
            chunks.append(head + b'"choices":[],"usage":' + _ENCODER.encode(self._usage()) + b"}")
        return chunks

    def whole(self) -> bytes:
        """The response of a call not streamed: every item joined."""
        if self.kind is Kind.EMBEDDINGS:
            return self._embeddings()
        text = "".join(self.texts)
        if self.kind is Kind.CHAT:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": self._finish_reason(),
            }
            kind = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": self._finish_reason(),
            }
            kind = "text_completion"
        return _ENCODER.encode(
            {
                "id": self.id,
                "object": kind,
                "created": self.created,
                "model": self.model.name,
                "choices": [choice],
                "usage": self._usage(),
            }
        )

    def _finish_reason(self) -> str:
        if self.finish_reason is not None:
            return self.finish_reason
        limit = self._max_tokens
        return "length" if isinstance(limit, int) and self.items >= limit > 0 else "stop"

    def _usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.items,
            "total_tokens": self.prompt_tokens + self.items,
        }

    def _embeddings(self) -> bytes:
        as_base64 = self.document.get("encoding_format") == "base64"
        vectors = self.vectors or []
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": _base64(vector) if as_base64 else vector,
            }
            for index, vector in enumerate(vectors)
        ]
        return _ENCODER.encode(
            {
                "object": "list",
                "data": data,
                "model": self.model.name,
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        )


def _vectors(result: object) -> list[list[float]]:
    """A model's embeddings: one vector (its input was one string) or a list of them."""
    if isinstance(result, list) and result and not isinstance(result[0], list):
        return [result]
    if not isinstance(result, list):
        raise ResultError(f"expected a list of vectors, got {type(result).__name__}")
    return result


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 embedding: little-endian float32s."""
    values = array.array("f", vector)
    if not _LITTLE:
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


class _Answer:
    """How an OpenAI call answers: chunk events then `[DONE]`, or one JSON document."""

    def __init__(self, send: Send, *, gzip: bool, exchange: _Exchange) -> None:
        self._send = send
        self._exchange = exchange
        self._gzip = gzip
        self.events = EventStream(send, gzip=gzip) if exchange.is_streamed else None
        self._is_open = False
        """The opening chunk went out (keep-alives may have started the stream before)."""

    async def _open(self, events: EventStream) -> None:
        if not self._is_open:
            self._is_open = True
            first = self._exchange.first_chunk()
            if first is not None:
                await events.data(first)

    async def result(self, data: bytes) -> None:
        events = self.events
        if events is None or not data:
            return  # kept by the exchange for the whole response, or no token at all
        await self._open(events)
        await events.data(data)

    async def finish(self) -> None:
        events = self.events
        if events is None:
            await send_json(self._send, 200, self._exchange.whole(), compress=self._gzip)
            return
        await self._open(events)  # a stream of no items still opens like any other
        for chunk in self._exchange.last_chunks():
            await events.data(chunk)
        await events.data(_DONE)
        await events.end()

    async def fail(self, status: Status, message: str, *, http_status: int | None = None) -> None:
        events = self.events
        if events is None or not events.is_started:
            await _send_error(self._send, status, message, http_status)
            return
        await events.data(openai_error_body(status, message))  # the client raises APIError
        await events.end()


async def _send_error(send: Send, status: Status, message: str, http_status: int | None) -> None:
    code = http_status or HTTP_STATUS.get(status, 500)
    retry = b"true" if code in _RETRY_HELPS else b"false"
    await send_json(
        send,
        code,
        openai_error_body(status, message, code),
        retry=True,
        close=code == 408,
        extra_headers=[(b"x-should-retry", retry)],
    )
