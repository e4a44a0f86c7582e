"""The hardened edge: what a hostile or broken client sends fails its own call, clearly, and
nothing else. Raw HTTP/2 frames (`rawh2.RawH2`) and stock clients as the callers."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator

import anyio
import httpx
import hyperframe.frame
import pytest

from blazerpc import BlazeApp, BlazeClient, BlazeServer

from .rawh2 import Answer, RawH2, grpc_message
from .support import WAIT_S

pytestmark = pytest.mark.anyio

ADD = "/blazerpc.InferenceService/PredictAdd"
TOTAL = "/blazerpc.InferenceService/PredictTotal"
ADD_1_2 = b"\x08\x01\x10\x02"  # AddRequest(a=1, b=2)


def _app() -> BlazeApp:
    app = BlazeApp()

    @app.model("add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.model("total")
    async def total(numbers: AsyncIterator[int]) -> int:
        return sum([n async for n in numbers])

    return app


APP = _app()


def _call(port: int, *bodies: bytes) -> tuple[Answer, Answer]:
    """One call whose body is `bodies`, then a normal call on the same connection."""
    with RawH2(port) as raw:
        stream = raw.grpc_headers(ADD)
        for i, body in enumerate(bodies):
            raw.data(stream, body, end_stream=i == len(bodies) - 1)
        broken = raw.answer(stream)
        normal = raw.grpc_headers(ADD)
        raw.data(normal, grpc_message(ADD_1_2), end_stream=True)
        return broken, raw.answer(normal)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"\x00\x00\x00", "the request ended inside a message's 5-byte length prefix"),
        (grpc_message(b"\x08\x01" * 4 + b"\x10", declared=100), "after 9 of its 100 declared"),
    ],
    ids=["inside the prefix", "shorter than declared"],
)
async def test_a_message_cut_short_is_invalid_argument_and_the_connection_lives(
    body: bytes, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with BlazeServer(APP, port=0) as server:
        broken, normal = await anyio.to_thread.run_sync(_call, server.port, body)
    assert broken.status == "3", (broken.status, broken.message)  # INVALID_ARGUMENT
    assert says in broken.message
    assert normal.status == "0" and normal.data == grpc_message(b"\x08\x03")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback


async def test_errors_off_the_model_routes_are_json_in_their_family_shape() -> None:
    async with BlazeServer(APP, port=0, http_port=0) as server:
        base = f"http://127.0.0.1:{server.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=WAIT_S) as http:
            unknown = await http.get("/nowhere")
            wrong_method = await http.delete("/models/add")
            plain_get_on_ws = await http.get("/models/add/ws")
            v2_unknown = await http.get("/v2/nowhere")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "code": "NOT_FOUND",
        "message": "there is no route GET /nowhere; see GET /models and /openapi.json.",
    }
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "UNIMPLEMENTED"
    assert "DELETE" in wrong_method.json()["message"]
    assert "POST" in wrong_method.headers["allow"]
    assert plain_get_on_ws.status_code in (400, 426)
    assert plain_get_on_ws.json()["code"] in ("INVALID_ARGUMENT", "FAILED_PRECONDITION")
    assert "WebSocket" in plain_get_on_ws.json()["message"]
    assert v2_unknown.status_code == 404 and "error" in v2_unknown.json()


def _raw_http(port: int, request: bytes) -> bytes:
    """One raw HTTP/1.1 request; what came back before the server closed or went quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before it has read it all
        answer = b""
        while chunk := _recv(sock):
            answer += chunk
        return answer


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except (ConnectionResetError, TimeoutError):
        return b""


async def test_oversized_http_headers_get_431_as_json_and_the_server_goes_on() -> None:
    huge = b"x" * (1024 * 1024)
    request = (
        b"POST /models/add HTTP/1.1\r\nHost: x\r\nX-Huge: " + huge + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 16\r\n\r\n" + b'{"a": 1, "b": 2}'
    )
    async with BlazeServer(APP, port=0, http_port=0) as server:
        answer = await anyio.to_thread.run_sync(_raw_http, server.http_port, request)
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            normal = await http.post(
                f"http://127.0.0.1:{server.http_port}/models/add", json={"a": 1, "b": 2}
            )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert json.loads(body) == {
        "code": "RESOURCE_EXHAUSTED",
        "message": "the request's headers are over 65536 bytes, the server's limit "
        "(max_header_bytes); send less in headers.",
    }
    assert normal.json() == {"result": 3}


async def test_the_head_limit_counts_the_head_only_not_a_large_body() -> None:
    pad = "p" * (300 * 1024)
    body = json.dumps({"a": 1, "b": 2, "pad": pad}).encode()
    request = (
        b"POST /models/add HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    v2_request = b"GET /v2/models/add HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"y" * 70_000 + b"\r\n\r\n"
    async with BlazeServer(APP, port=0, http_port=0) as server:
        answer = await anyio.to_thread.run_sync(_raw_http, server.http_port, request)
        v2 = await anyio.to_thread.run_sync(_raw_http, server.http_port, v2_request)
    assert answer.startswith(b"HTTP/1.1 400 ")  # the body was read: the field is unknown
    assert b"'pad' is not in the schema" in answer
    head, _, v2_body = v2.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ") and "error" in json.loads(v2_body)


def _big_metadata_beside_normal_calls(port: int) -> tuple[Answer, list[Answer]]:
    """20 calls in flight on one connection, then one with 70 KiB of metadata beside them."""
    with RawH2(port) as raw:
        normal = [raw.grpc_headers(ADD) for _ in range(20)]
        big = raw.grpc_headers(ADD, ("x-blob", "b" * (70 * 1024)))
        raw.data(big, grpc_message(ADD_1_2), end_stream=True)
        for stream in normal:
            raw.data(stream, grpc_message(ADD_1_2), end_stream=True)
        return raw.answer(big), [raw.answer(stream) for stream in normal]


async def test_oversized_metadata_fails_that_call_alone() -> None:
    async with BlazeServer(APP, port=0) as server:
        big, normal = await anyio.to_thread.run_sync(_big_metadata_beside_normal_calls, server.port)
    assert big.status == "8", (big.status, big.reset)  # RESOURCE_EXHAUSTED
    assert "max_header_bytes" in big.message
    assert [answer.status for answer in normal] == ["0"] * 20


def _more_streams_than_allowed(port: int, count: int) -> tuple[list[Answer], bool]:
    """`count` calls opened at once, before the server's SETTINGS are read."""
    with RawH2(port) as raw:
        streams = [raw.grpc_headers(ADD) for _ in range(count)]
        for stream in streams:
            raw.data(stream, grpc_message(ADD_1_2), end_stream=True)
        answers = [raw.answer(stream) for stream in streams]
        return answers, raw.closed_by_server


async def test_streams_past_the_connections_limit_are_refused_one_by_one() -> None:
    async with BlazeServer(APP, port=0) as server:
        answers, closed = await anyio.to_thread.run_sync(
            _more_streams_than_allowed, server.port, 150
        )
    served = [a for a in answers if a.status == "0"]
    refused = [a for a in answers if a.reset == 7]  # REFUSED_STREAM: safe to retry
    assert not closed
    assert len(served) >= 100 and len(served) + len(refused) == 150


def _bad_message_while_still_sending(port: int) -> tuple[Answer, list[int], Answer]:
    """A client stream whose first message is not protobuf, then more DATA frames that were
    in flight when the server ended the call; then a normal call on the same connection."""
    with RawH2(port) as raw:
        stream = raw.grpc_headers(TOTAL)
        raw.data(stream, grpc_message(b"\xff\xff\xff"))  # not a TotalRequest; no END_STREAM
        ended = raw.answer(stream)
        for _ in range(3):
            raw.raw_data(stream, grpc_message(b"\x08\x01"))
        after = raw.raw_frames_for(0.5)
        normal = raw.grpc_headers(ADD)
        raw.data(normal, grpc_message(ADD_1_2), end_stream=True)
        resets = [
            frame.error_code
            for frame in after
            if frame.stream_id == stream and isinstance(frame, hyperframe.frame.RstStreamFrame)
        ]
        return ended, resets, raw.answer(normal)


async def test_frames_in_flight_after_a_call_ended_are_ignored() -> None:
    async with BlazeServer(APP, port=0) as server:
        ended, resets, normal = await anyio.to_thread.run_sync(
            _bad_message_while_still_sending, server.port
        )
    assert ended.status == "3"  # INVALID_ARGUMENT, in the trailers
    assert 5 not in resets  # no STREAM_CLOSED: after RST_STREAM, frames in flight are ignored
    assert normal.status == "0"


async def test_streams_that_never_send_hold_no_slot_of_max_streams() -> None:
    async with BlazeServer(APP, port=0, max_streams=5) as server:
        raw = await anyio.to_thread.run_sync(RawH2, server.port)
        try:
            for _ in range(5):  # HEADERS only: no message, no END_STREAM, held open
                await anyio.to_thread.run_sync(raw.grpc_headers, TOTAL)
            await anyio.to_thread.run_sync(raw.ping)  # the server has taken them in
            async with BlazeClient(port=server.port, app=APP, timeout=WAIT_S) as client:
                assert await client.send_stream("total", [1, 2, 3]) == 6
        finally:
            raw.close()


def _rapid_reset(port: int, streams: int) -> tuple[bool, int | None]:
    """Open and reset `streams` calls at once, as fast as the socket takes them: whether the
    server closed the connection, and the GOAWAY error code it sent, if any."""
    with RawH2(port) as raw:
        for _ in range(streams):
            stream = raw.grpc_headers(TOTAL)
            raw.conn.reset_stream(stream)
            raw.flush()
            if raw.closed_by_server:
                break
        frames = raw.raw_frames_for(1.0)
        goaway = [f for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame)]
        return bool(goaway) or raw.closed_by_server, goaway[0].error_code if goaway else None


async def test_a_rapid_reset_flood_gets_goaway_and_other_clients_are_served() -> None:
    async with BlazeServer(APP, port=0) as server:
        async with anyio.create_task_group() as group:
            outcome: list[tuple[bool, int | None]] = []

            async def attack() -> None:
                outcome.append(await anyio.to_thread.run_sync(_rapid_reset, server.port, 5000))

            group.start_soon(attack)
            async with BlazeClient(port=server.port, app=APP, timeout=WAIT_S) as client:
                for _ in range(20):  # a normal client, on its own connection, meanwhile
                    assert await client.predict("add", a=1, b=2) == 3
        closed, code = outcome[0]
    assert closed and code == 0xB  # GOAWAY(ENHANCE_YOUR_CALM)


def _continuation_flood(port: int) -> tuple[bool, int | None]:
    """A HEADERS frame without END_HEADERS, then CONTINUATION frames that never end the block."""
    with RawH2(port) as raw:
        stream = raw.conn.get_next_available_stream_id()
        raw.sock.sendall(hyperframe.frame.HeadersFrame(stream, data=b"\x82").serialize())
        block = hyperframe.frame.ContinuationFrame(stream, data=b"\x00" * 16000).serialize()
        try:
            for _ in range(200):
                raw.sock.sendall(block)
        except (BrokenPipeError, ConnectionResetError):
            pass
        frames = raw.raw_frames_for(1.0)
        goaway = [f for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame)]
        return bool(goaway), goaway[0].error_code if goaway else None


async def test_a_continuation_flood_gets_goaway_and_other_clients_are_served() -> None:
    async with BlazeServer(APP, port=0) as server:
        outcome = await anyio.to_thread.run_sync(_continuation_flood, server.port)
        async with BlazeClient(port=server.port, app=APP, timeout=WAIT_S) as client:
            assert await client.predict("add", a=1, b=2) == 3
    assert outcome == (True, 0xB)  # GOAWAY(ENHANCE_YOUR_CALM)
