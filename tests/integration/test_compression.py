"""gzip on the wire: compressed requests are always inflated (within max_request_bytes), and
with `response_compression="gzip"` responses are compressed for callers that accept it.

Stock grpcio (which only compresses a message that gzip shrinks, so the payloads here are
long and repetitive) and BlazeClient as the callers; raw HTTP/2 frames (`rawh2.RawH2`) to see
the flags and headers on the wire, and to send what a broken client sends.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
import grpc
import pytest
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from blazerpc import BlazeApp, BlazeClient, BlazeServer
from blazerpc.wire.protobuf import SchemaCodec

from .rawh2 import Answer, RawH2, grpc_message
from .support import EVERY_SHAPE, FOUR_SHAPES, WAIT_S, blaze_serve, stock_every_shape

pytestmark = pytest.mark.anyio

T = TypeVar("T")

SERVICE = "/blazerpc.InferenceService"
ACCEPTS_GZIP = ("grpc-accept-encoding", "identity,deflate,gzip")  # what grpcio sends
TEXT = "blaze " * 2000
"""12 KB that gzip shrinks to a few dozen bytes, so grpcio sends it compressed."""
LOUD = TEXT.upper()


def _app() -> BlazeApp:
    app = BlazeApp()

    @app.model("shout")
    async def shout(text: str) -> str:
        return text.upper()

    @app.model("repeat", streaming=True)
    async def repeat(text: str, times: int) -> AsyncIterator[str]:
        for _ in range(times):
            yield text.upper()

    @app.model("join")
    async def join(texts: AsyncIterator[str]) -> str:
        return "".join([text async for text in texts]).upper()

    @app.model("echo", streaming=True)
    async def echo(texts: AsyncIterator[str]) -> AsyncIterator[str]:
        async for text in texts:
            yield text.upper()

    return app


APP = _app()
"""shout (unary), repeat (server stream), join (client stream), echo (bidirectional): text in,
the same text upper-cased out."""
CLASSES: dict[str, Any] = SchemaCodec(APP.schema).classes  # protobuf classes: the Any seam
FOUR_SHAPES_CLASSES: dict[str, Any] = SchemaCodec(FOUR_SHAPES.schema).classes


def _method(channel: grpc.Channel, kind: str, name: str) -> Any:
    return getattr(channel, kind)(
        f"{SERVICE}/Predict{name}",
        request_serializer=CLASSES[f"{name}Request"].SerializeToString,
        response_deserializer=CLASSES[f"{name}Response"].FromString,
    )


def _shout(channel: grpc.Channel, **options: Any) -> object:
    request = CLASSES["ShoutRequest"](text=TEXT)
    return _method(channel, "unary_unary", "Shout")(request, timeout=WAIT_S, **options).result


def _repeat(channel: grpc.Channel, **options: Any) -> object:
    request = CLASSES["RepeatRequest"](text=TEXT, times=3)
    replies = _method(channel, "unary_stream", "Repeat")(request, timeout=WAIT_S, **options)
    return [reply.result for reply in replies]


def _join(channel: grpc.Channel, **options: Any) -> object:
    requests = iter([CLASSES["JoinRequest"](texts=TEXT), CLASSES["JoinRequest"](texts="end")])
    return _method(channel, "stream_unary", "Join")(requests, timeout=WAIT_S, **options).result


def _echo(channel: grpc.Channel, **options: Any) -> object:
    requests = iter([CLASSES["EchoRequest"](texts=TEXT), CLASSES["EchoRequest"](texts=TEXT)])
    replies = _method(channel, "stream_stream", "Echo")(requests, timeout=WAIT_S, **options)
    return [reply.result for reply in replies]


SHAPES: dict[str, tuple[Callable[..., object], object]] = {
    "unary": (_shout, LOUD),
    "server stream": (_repeat, [LOUD] * 3),
    "client stream": (_join, LOUD + "END"),
    "bidirectional": (_echo, [LOUD, LOUD]),
}
"""A stock grpcio call of each shape of APP, and what it returns."""


def _stock(port: int, call: Callable[[grpc.Channel], T], **channel: Any) -> T:
    """`call` on a new grpcio channel to the server; `channel` holds its options."""
    with grpc.insecure_channel(f"127.0.0.1:{port}", **channel) as opened:
        return call(opened)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("request_compression", "response_compression"),
    [(grpc.Compression.Gzip, "off"), (None, "gzip"), (grpc.Compression.Gzip, "gzip")],
    ids=["gzip requests", "gzip responses", "gzip both ways"],
)
async def test_every_shape_gives_the_same_results_compressed(
    shape: str, request_compression: Any, response_compression: str
) -> None:
    call, expected = SHAPES[shape]
    async with BlazeServer(APP, port=0, response_compression=response_compression) as server:
        compressed = await anyio.to_thread.run_sync(
            lambda: _stock(server.port, call, compression=request_compression)
        )
        plain = await anyio.to_thread.run_sync(lambda: _stock(server.port, call))
    assert compressed == expected
    assert plain == expected


@pytest.mark.parametrize(
    "compression", [grpc.Compression.Gzip, grpc.Compression.Deflate], ids=["gzip", "deflate"]
)
async def test_a_per_call_compressed_request_is_inflated_and_the_channel_goes_on(
    compression: Any,
) -> None:
    def calls(channel: grpc.Channel) -> object:
        return [_shout(channel, compression=compression), _shout(channel)]

    async with BlazeServer(APP, port=0) as server:
        answers = await anyio.to_thread.run_sync(lambda: _stock(server.port, calls))
    assert answers == [LOUD, LOUD]


async def test_a_gzip_channel_calls_every_shape_with_small_messages() -> None:
    async with BlazeServer(FOUR_SHAPES, port=0, response_compression="gzip") as server:
        seen = await anyio.to_thread.run_sync(
            lambda: _stock(server.port, stock_every_shape, compression=grpc.Compression.Gzip)
        )
    assert seen == EVERY_SHAPE


def _messages(data: bytes) -> list[tuple[bool, bytes]]:
    """The gRPC messages of a response body, as sent: (compressed flag, bytes)."""
    messages = []
    while data:
        is_compressed, length = struct.unpack(">?I", data[:5])
        messages.append((is_compressed, data[5 : 5 + length]))
        data = data[5 + length :]
    return messages


def _raw_call(port: int, path: str, body: bytes, *headers: tuple[str, str]) -> Answer:
    """One call of `path` with `headers` and `body`, on a raw HTTP/2 connection."""
    with RawH2(port) as raw:
        stream = raw.grpc_headers(path, *headers)
        raw.data(stream, body, end_stream=True)
        return raw.answer(stream)


RAW_CALLS = {
    "unary": ("Shout", CLASSES["ShoutRequest"](text=TEXT), 1),
    "server stream": ("Repeat", CLASSES["RepeatRequest"](text=TEXT, times=3), 3),
}
"""A call with large, repetitive responses, and how many it gets."""


@pytest.mark.parametrize("shape", RAW_CALLS)
async def test_gzip_responses_carry_the_header_and_the_compressed_flag(shape: str) -> None:
    name, request, count = RAW_CALLS[shape]
    body = grpc_message(request.SerializeToString())
    async with BlazeServer(APP, port=0, response_compression="gzip") as server:
        answer = await anyio.to_thread.run_sync(
            _raw_call, server.port, f"{SERVICE}/Predict{name}", body, ACCEPTS_GZIP
        )
    assert answer.status == "0", (answer.status, answer.message)
    assert answer.headers.get("grpc-encoding") == "gzip"
    messages = _messages(answer.data)
    assert [is_compressed for is_compressed, _ in messages] == [True] * count
    response = CLASSES[f"{name}Response"]
    assert [response.FromString(gzip.decompress(data)).result for _, data in messages] == [
        LOUD
    ] * count


@pytest.mark.parametrize(
    ("response_compression", "headers"),
    [("off", (ACCEPTS_GZIP,)), ("gzip", ()), ("gzip", (("grpc-accept-encoding", "identity"),))],
    ids=["option off, caller accepts gzip", "option on, caller says nothing", "identity only"],
)
async def test_responses_stay_uncompressed_unless_both_sides_want_gzip(
    response_compression: str, headers: tuple[tuple[str, str], ...]
) -> None:
    body = grpc_message(CLASSES["ShoutRequest"](text=TEXT).SerializeToString())
    async with BlazeServer(APP, port=0, response_compression=response_compression) as server:
        answer = await anyio.to_thread.run_sync(
            _raw_call, server.port, f"{SERVICE}/PredictShout", body, *headers
        )
    assert answer.status == "0", (answer.status, answer.message)
    assert "grpc-encoding" not in answer.headers
    [(is_compressed, data)] = _messages(answer.data)
    assert not is_compressed
    assert CLASSES["ShoutResponse"].FromString(data).result == LOUD


async def test_the_request_limit_counts_the_inflated_size() -> None:
    def calls(channel: grpc.Channel) -> tuple[grpc.StatusCode, str, object]:
        shout = _method(channel, "unary_unary", "Shout")
        with pytest.raises(grpc.RpcError) as refused:
            shout(CLASSES["ShoutRequest"](text="\0" * 200_000), timeout=WAIT_S)
        after = shout(CLASSES["ShoutRequest"](text="a" * 1000), timeout=WAIT_S).result
        return refused.value.code(), refused.value.details() or "", after

    async with BlazeServer(APP, port=0, max_request_bytes=65536) as server:
        code, details, after = await anyio.to_thread.run_sync(
            lambda: _stock(server.port, calls, compression=grpc.Compression.Gzip)
        )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert "max_request_bytes" in details
    assert after == "A" * 1000


def _compressed(payload: bytes, compress: Callable[[bytes], bytes] = gzip.compress) -> bytes:
    """A gRPC message with the compressed flag set, its body compressed by `compress`."""
    body = compress(payload)
    return struct.pack(">?I", True, len(body)) + body


SHOUT_HI = CLASSES["ShoutRequest"](text="hi").SerializeToString()


def _call_then_a_normal_one(
    port: int, body: bytes, *headers: tuple[str, str]
) -> tuple[Answer, Answer]:
    """One call of shout with `headers` and `body`, then a plain call on the same connection."""
    path = f"{SERVICE}/PredictShout"
    with RawH2(port) as raw:
        broken = raw.grpc_headers(path, *headers)
        raw.data(broken, body, end_stream=True)
        first = raw.answer(broken)
        normal = raw.grpc_headers(path)
        raw.data(normal, grpc_message(SHOUT_HI), end_stream=True)
        return first, raw.answer(normal)


def _is_hi_shouted(answer: Answer) -> bool:
    [(is_compressed, data)] = _messages(answer.data)
    return answer.status == "0" and not is_compressed and data == _shouted("HI")


def _shouted(text: str) -> bytes:
    serialized: bytes = CLASSES["ShoutResponse"](result=text).SerializeToString()
    return serialized


async def test_a_compressed_request_over_raw_http2_is_inflated() -> None:
    async with BlazeServer(APP, port=0) as server:
        gzipped, zlibbed = [
            await anyio.to_thread.run_sync(
                _raw_call,
                server.port,
                f"{SERVICE}/PredictShout",
                _compressed(SHOUT_HI, compress),
                ("grpc-encoding", encoding),
            )
            for encoding, compress in (("gzip", gzip.compress), ("deflate", zlib.compress))
        ]
    for answer in (gzipped, zlibbed):
        assert answer.status == "0", (answer.status, answer.message)
        assert _messages(answer.data) == [(False, _shouted("HI"))]


async def test_corrupt_gzip_is_invalid_argument_and_the_connection_lives() -> None:
    garbage = b"this is not gzip at all"
    body = struct.pack(">?I", True, len(garbage)) + garbage
    async with BlazeServer(APP, port=0) as server:
        broken, normal = await anyio.to_thread.run_sync(
            _call_then_a_normal_one, server.port, body, ("grpc-encoding", "gzip")
        )
    assert broken.status == "3", (broken.status, broken.message)  # INVALID_ARGUMENT
    assert "gzip" in broken.message.lower()
    assert _is_hi_shouted(normal)


@pytest.mark.parametrize(
    "packed",
    [gzip.compress(SHOUT_HI) * 2, gzip.compress(SHOUT_HI) + b"garbage"],
    ids=["two gzip members", "bytes after the gzip stream"],
)
async def test_bytes_after_the_gzip_stream_are_invalid_argument(packed: bytes) -> None:
    body = struct.pack(">?I", True, len(packed)) + packed
    async with BlazeServer(APP, port=0) as server:
        broken, normal = await anyio.to_thread.run_sync(
            _call_then_a_normal_one, server.port, body, ("grpc-encoding", "gzip")
        )
    assert broken.status == "3", (broken.status, broken.message)  # INVALID_ARGUMENT
    assert "after its gzip stream" in broken.message
    assert _is_hi_shouted(normal)


@pytest.mark.parametrize(
    "headers", [(), (("grpc-encoding", "identity"),)], ids=["no grpc-encoding", "identity"]
)
async def test_the_compressed_flag_without_an_encoding_is_invalid_argument(
    headers: tuple[tuple[str, str], ...],
) -> None:
    async with BlazeServer(APP, port=0) as server:
        broken, normal = await anyio.to_thread.run_sync(
            _call_then_a_normal_one, server.port, _compressed(SHOUT_HI), *headers
        )
    assert broken.status == "3", (broken.status, broken.message)  # INVALID_ARGUMENT
    assert _is_hi_shouted(normal)


async def test_an_unknown_encoding_is_unimplemented_and_names_gzip() -> None:
    async with BlazeServer(APP, port=0) as server:
        broken, normal = await anyio.to_thread.run_sync(
            _call_then_a_normal_one, server.port, _compressed(SHOUT_HI), ("grpc-encoding", "snappy")
        )
    assert broken.status == "12", (broken.status, broken.message)  # UNIMPLEMENTED
    assert "gzip" in broken.message
    assert _is_hi_shouted(normal)


async def test_blaze_client_calls_every_shape_of_a_gzip_server() -> None:
    async with (
        BlazeServer(APP, port=0, response_compression="gzip") as server,
        BlazeClient(port=server.port, app=APP, timeout=WAIT_S) as client,
    ):
        shouted = await client.predict("shout", text=TEXT)
        repeated = [text async for text in client.stream("repeat", text=TEXT, times=3)]
        joined = await client.send_stream("join", [TEXT, "end"])
        echoed = [text async for text in client.exchange("echo", [TEXT, TEXT])]
    assert shouted == LOUD
    assert repeated == [LOUD] * 3
    assert joined == LOUD + "END"
    assert echoed == [LOUD, LOUD]


def _health_and_reflection(channel: grpc.Channel) -> tuple[int, list[str], list[str]]:
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S
    )
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="blazerpc.InferenceService"),
    ]
    listed, described = reflection.ServerReflectionInfo(iter(requests), timeout=WAIT_S)
    services = [service.name for service in listed.list_services_response.service]
    files = described.file_descriptor_response.file_descriptor_proto
    described_services = [
        service.name for file in files for service in FileDescriptorProto.FromString(file).service
    ]
    return health.status, services, described_services


async def test_health_and_reflection_work_from_a_gzip_channel() -> None:
    async with BlazeServer(APP, port=0, response_compression="gzip") as server:
        status, services, described = await anyio.to_thread.run_sync(
            lambda: _stock(server.port, _health_and_reflection, compression=grpc.Compression.Gzip)
        )
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert "blazerpc.InferenceService" in services
    assert "InferenceService" in described


def test_blaze_serve_response_compression_gzip_compresses_for_grpcio() -> None:
    echo = FOUR_SHAPES_CLASSES["EchoRequest"](words="a" * 10_000).SerializeToString()
    with blaze_serve(
        "tests.integration.support:FOUR_SHAPES", "--response-compression", "gzip"
    ) as served:
        answer = _raw_call(served.port, f"{SERVICE}/PredictEcho", grpc_message(echo), ACCEPTS_GZIP)
        seen = _stock(served.port, stock_every_shape, compression=grpc.Compression.Gzip)
    assert answer.status == "0", (answer.status, answer.message)
    assert answer.headers.get("grpc-encoding") == "gzip"
    [(is_compressed, data)] = _messages(answer.data)
    assert is_compressed
    assert FOUR_SHAPES_CLASSES["EchoResponse"].FromString(gzip.decompress(data)).result == (
        "A" * 10_000
    )
    assert seen == EVERY_SHAPE


def _compressed_health_and_reflection(channel: grpc.Channel) -> tuple[str, str]:
    """A health Check and a reflection request long enough that grpcio sends them compressed."""
    long_name = "no.such.Service" * 500
    try:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=long_name), timeout=WAIT_S
        )
        health = "OK"
    except grpc.RpcError as err:
        health = err.code().name
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=long_name)
    [answer] = reflection.ServerReflectionInfo(iter([request]), timeout=WAIT_S)
    return health, answer.error_response.error_message


async def test_compressed_health_and_reflection_requests_are_inflated() -> None:
    async with BlazeServer(APP, port=0) as server:
        health, reflection_error = await anyio.to_thread.run_sync(
            lambda: _stock(
                server.port, _compressed_health_and_reflection, compression=grpc.Compression.Gzip
            )
        )
    assert health == "NOT_FOUND"  # the name was read: it is unknown, not a broken message
    assert "no.such.Service" in reflection_error
