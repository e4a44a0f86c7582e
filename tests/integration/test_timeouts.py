"""Time limits on connections and calls: a client that stalls, goes quiet or never answers loses
its own connection or call, clearly, and nothing else does.

The limits are server options in seconds (0 turns one off), set small here: handshake_timeout,
header_timeout, message_timeout, idle_timeout, keepalive_interval and keepalive_timeout,
max_connection_age and max_connection_age_grace; and max_calls, a count. The callers are raw
sockets, `_Peer` (RawH2 sending, the server's frames read as sent), stock grpcio and BlazeClient.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import grpc
import hpack
import httpx
import hyperframe.frame
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blazerpc import BlazeApp, BlazeClient, BlazeServer, Context

from .rawh2 import Answer, RawH2, grpc_message
from .support import WAIT_S, Probe, blaze_serve

pytestmark = pytest.mark.anyio

SHORT = 0.3
"""The limit under test, in seconds: short, so a test that waits past it stays fast."""
OUTLAST = 3 * SHORT
"""How long a test waits to show that something did not happen: past the limit, with margin."""

SERVICE = "/blazerpc.InferenceService"
ADD = f"{SERVICE}/PredictAdd"
TOTAL = f"{SERVICE}/PredictTotal"
ECHO = f"{SERVICE}/PredictEcho"
WATCH = f"{SERVICE}/PredictWatch"
PEER = f"{SERVICE}/PredictPeer"
ADD_1_2 = b"\x08\x01\x10\x02"  # AddRequest(a=1, b=2)
THREE = b"\x08\x03"  # AddResponse(result=3), and TotalResponse(result=3)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The 24 bytes an HTTP/2 client sends first, before its SETTINGS."""


def _number(n: int) -> bytes:
    """A message whose field 1 is the small int `n`: TotalRequest(numbers=n), WatchRequest(n)."""
    return b"\x08" + bytes([n])


def _text(value: str) -> bytes:
    """A message whose field 1 is the short string `value`: EchoRequest, WatchResponse, ..."""
    encoded = value.encode()
    return b"\x0a" + bytes([len(encoded)]) + encoded


def _app(probe: Probe) -> BlazeApp:
    app = BlazeApp()

    @app.model("add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.model("total")
    async def total(numbers: AsyncIterator[int]) -> int:
        return sum([n async for n in numbers])

    @app.model("echo", streaming=True)
    async def echo(words: AsyncIterator[str]) -> AsyncIterator[str]:
        async for word in words:
            yield word.upper()

    @app.model("peer")
    async def peer(ctx: Context) -> str:
        """The caller's address: which connection the call came on."""
        return ctx.peer or ""

    @app.model("watch", streaming=True)
    async def watch(n: int, ctx: Context) -> AsyncIterator[str]:
        """The caller's address `n` times, waiting at the gate after the first: a stream that
        runs for as long as the test keeps the gate shut."""
        probe.start()
        for i in range(n):
            if i == 1:
                await probe.until_released()
            yield ctx.peer or ""

    return app


def _opened() -> Probe:
    probe = Probe()
    probe.release()
    return probe


APP = _app(_opened())
"""The models with their gate open, for the tests that hold no call at it."""


class _Peer:
    """A gRPC caller on one HTTP/2 connection: RawH2 sends, and the server's frames are read
    here as sent.

    h2's own state machine takes no frame once the connection got a GOAWAY, while the server
    still finishes its calls after one; and it answers every PING, while a test needs a client
    that does not. This one answers the server's SETTINGS always and its PINGs only while
    `acks_pings`, and records every GOAWAY's error code. Blocking: run it in a worker thread.
    """

    def __init__(self, port: int, *, acks_pings: bool = True) -> None:
        self.raw = RawH2(port)
        self.sock = self.raw.sock
        self.acks_pings = acks_pings
        self.pings = 0
        """PINGs the server sent (not counting acks of the client's own)."""
        self.goaways: list[int] = []
        """The error code of each GOAWAY the server sent, in order."""
        self.closed = False
        """The server closed or reset the connection."""
        self._pongs = 0
        self._unread = b""
        self._block = b""
        self._block_ends_stream = False
        self._decoder = hpack.Decoder()

    @property
    def address(self) -> str:
        """This end of the connection, as a model's `ctx.peer` names it."""
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def open(self, path: str) -> int:
        """A call's HEADERS, without END_STREAM: the call is open, its id returned."""
        return self.raw.grpc_headers(path)

    def send(self, stream: int, payload: bytes, *, end_stream: bool = False) -> None:
        self.raw.data(stream, payload, end_stream=end_stream)

    def call(self, path: str, message: bytes) -> int:
        """A call with one whole request message and END_STREAM; its id."""
        stream = self.open(path)
        self.send(stream, grpc_message(message), end_stream=True)
        return stream

    def unary(self, path: str, message: bytes) -> Answer:
        """A whole call, and its answer."""
        return self.answer(self.call(path, message))

    def reset(self, stream: int) -> None:
        self.raw.conn.reset_stream(stream)
        self.raw.flush()

    def answer(self, stream: int) -> Answer:
        """What the server sent on `stream` once it ended or reset it, or closed the connection;
        as it stands if none of that happened within WAIT_S."""
        answer = self.raw.answers[stream]
        self.read_until(lambda: answer.ended or answer.reset is not None)
        return answer

    def ping(self) -> None:
        """A PING, answered: the server has taken in every frame sent before it."""
        pongs = self._pongs
        self._write(hyperframe.frame.PingFrame(0, opaque_data=b"blazerpc"))
        assert self.read_until(lambda: self._pongs > pongs), "the server never answered a PING"

    def read_for(self, seconds: float) -> None:
        """Take in what the server sends for `seconds`, or until it closes the connection."""
        self._read(lambda: False, seconds)

    def read_until(self, condition: Callable[[], bool]) -> bool:
        """Take in what the server sends until `condition()` holds, the server closes the
        connection or WAIT_S passes; whether `condition()` holds."""
        self._read(condition, WAIT_S)
        return condition()

    def read_until_closed(self) -> bool:
        """Whether the server closes the connection within WAIT_S."""
        return self.read_until(lambda: self.closed)

    def _read(self, condition: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not (condition() or self.closed) and (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                chunk = b""
            finally:
                self.sock.settimeout(WAIT_S)
            if not chunk:
                self.closed = True
            self._unread += chunk
            for frame in self._frames():
                self._take(frame)

    def _frames(self) -> list[hyperframe.frame.Frame]:
        frames = []
        while len(self._unread) >= 9:
            frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(self._unread[:9]))
            if len(self._unread) < 9 + length:
                break
            frame.parse_body(memoryview(self._unread[9 : 9 + length]))
            frames.append(frame)
            self._unread = self._unread[9 + length :]
        return frames

    def _take(self, frame: hyperframe.frame.Frame) -> None:
        answer = self.raw.answers.get(frame.stream_id)
        if isinstance(frame, hyperframe.frame.SettingsFrame):
            if "ACK" not in frame.flags:
                self._write(hyperframe.frame.SettingsFrame(0, flags=["ACK"]))
        elif isinstance(frame, hyperframe.frame.PingFrame):
            self._take_ping(frame)
        elif isinstance(frame, hyperframe.frame.GoAwayFrame):
            self.goaways.append(frame.error_code)
        elif isinstance(frame, hyperframe.frame.HeadersFrame | hyperframe.frame.ContinuationFrame):
            self._take_header_block(frame, answer)
        elif isinstance(frame, hyperframe.frame.DataFrame):
            self._take_data(frame, answer)
        elif isinstance(frame, hyperframe.frame.RstStreamFrame) and answer is not None:
            answer.reset = frame.error_code
            answer.resets.append(frame.error_code)

    def _take_ping(self, frame: hyperframe.frame.PingFrame) -> None:
        if "ACK" in frame.flags:
            self._pongs += 1
            return
        self.pings += 1
        if self.acks_pings:
            self._write(hyperframe.frame.PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))

    def _take_header_block(
        self,
        frame: hyperframe.frame.HeadersFrame | hyperframe.frame.ContinuationFrame,
        answer: Answer | None,
    ) -> None:
        if isinstance(frame, hyperframe.frame.HeadersFrame):
            self._block, self._block_ends_stream = b"", "END_STREAM" in frame.flags
        self._block += frame.data
        if "END_HEADERS" not in frame.flags:
            return
        headers = {str(name): str(value) for name, value in self._decoder.decode(self._block)}
        if answer is None:
            return
        if answer.headers:
            answer.trailers = headers
        else:
            answer.headers = headers
        answer.ended = answer.ended or self._block_ends_stream

    def _take_data(self, frame: hyperframe.frame.DataFrame, answer: Answer | None) -> None:
        if frame.flow_controlled_length:  # the connection's window stays open, as h2 keeps it
            increment = frame.flow_controlled_length
            self._write(hyperframe.frame.WindowUpdateFrame(0, window_increment=increment))
        if answer is not None:
            answer.data += frame.data
            answer.ended = answer.ended or "END_STREAM" in frame.flags

    def _write(self, frame: hyperframe.frame.Frame) -> None:
        try:
            self.sock.sendall(frame.serialize())
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> _Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _messages(data: bytes) -> list[bytes]:
    """The length-prefixed gRPC messages of a stream's data, in order."""
    messages = []
    while len(data) >= 5:
        length = int.from_bytes(data[1:5], "big")
        messages.append(data[5 : 5 + length])
        data = data[5 + length :]
    return messages


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes `sock` within WAIT_S; what it sends meanwhile is dropped."""
    deadline = time.monotonic() + WAIT_S
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True
    return False


def _stall(port: int, sent: bytes) -> bool:
    """A TCP connection that sends `sent` and then nothing: whether the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(sent)
        return _closed_by_server(sock)


def _http_until_closed(port: int, request: bytes) -> tuple[bytes, bool]:
    """Send `request` and then nothing: what the server sent back, and whether it closed the
    connection within WAIT_S."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(request)
        received = b""
        deadline = time.monotonic() + WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received, False
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return received, True
            received += chunk
        return received, False


def _http_reply(received: bytes) -> tuple[int, Any]:
    """The status code and the JSON body of one raw HTTP/1.1 answer."""
    assert received, "the server sent no answer"
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), received
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunked(body)
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _unchunked(body: bytes) -> bytes:
    whole = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if not size:
            break
        whole, body = whole + body[:size], body[size + 2 :]
    return whole


async def _still_serves(server: BlazeServer) -> None:
    """The server answers a new caller, on a new connection."""
    async with BlazeClient(port=server.port, app=APP, timeout=WAIT_S) as client:
        assert await client.predict("add", a=1, b=2) == 3


@pytest.mark.parametrize(
    "sent",
    [b"", PREFACE[:12], PREFACE],
    ids=["nothing", "half the preface", "the preface without SETTINGS"],
)
async def test_a_connection_that_stalls_before_its_preface_is_closed(sent: bytes) -> None:
    async with BlazeServer(APP, port=0, handshake_timeout=SHORT) as server:
        closed = await anyio.to_thread.run_sync(_stall, server.port, sent)
        await _still_serves(server)
    assert closed, "the server kept a connection that never sent its HTTP/2 preface"


def _two_calls_apart(port: int) -> tuple[Answer, Answer, bool, list[int]]:
    """A call, OUTLAST of quiet, and another call on the same connection."""
    with _Peer(port) as peer:
        first = peer.unary(ADD, ADD_1_2)
        peer.read_for(OUTLAST)
        second = peer.unary(ADD, ADD_1_2)
        return first, second, peer.closed, peer.goaways


async def test_a_connection_past_its_handshake_stays_open_beyond_handshake_timeout() -> None:
    async with BlazeServer(APP, port=0, handshake_timeout=SHORT) as server:
        first, second, closed, goaways = await anyio.to_thread.run_sync(
            _two_calls_apart, server.port
        )
    assert (first.status, second.status) == ("0", "0"), (second.status, second.message)
    assert _messages(second.data) == [THREE]
    assert not closed and not goaways


@dataclass(frozen=True, slots=True)
class _Pems:
    """PEM files: the CA, and the server's chain and key for 127.0.0.1."""

    ca: str
    cert: str
    key: str


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> _Pems:
    where = tmp_path_factory.mktemp("pems")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(where / "ca.pem"))
    server.private_key_pem.write_to_path(str(where / "key.pem"))
    server.cert_chain_pems[0].write_to_path(str(where / "cert.pem"))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(where / "cert.pem"), append=True)
    return _Pems(ca=str(where / "ca.pem"), cert=str(where / "cert.pem"), key=str(where / "key.pem"))


def _tls_without_preface(port: int, ca: str) -> bool:
    """A TLS handshake done, then nothing: whether the server closes the connection."""
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as tcp:
        with context.wrap_socket(tcp, server_hostname="127.0.0.1") as tls:
            return _closed_by_server(tls)


async def test_over_tls_the_handshake_and_the_preface_must_come_within_handshake_timeout(
    pems: _Pems,
) -> None:
    async with BlazeServer(
        APP, port=0, handshake_timeout=SHORT, tls_cert=pems.cert, tls_key=pems.key
    ) as server:
        no_handshake = await anyio.to_thread.run_sync(_stall, server.port, b"")
        no_preface = await anyio.to_thread.run_sync(_tls_without_preface, server.port, pems.ca)
        async with BlazeClient(port=server.port, app=APP, tls_ca=pems.ca, timeout=WAIT_S) as client:
            assert await client.predict("add", a=1, b=2) == 3
    assert no_handshake, "the server kept a connection that never started its TLS handshake"
    assert no_preface, "the server kept a TLS connection that never sent its HTTP/2 preface"


def _header_block_never_finished(port: int) -> bool:
    """A HEADERS frame without END_HEADERS, then nothing: whether the server closes the
    connection."""
    with _Peer(port) as peer:
        peer.ping()  # SETTINGS exchanged: from here on the client sends nothing but the frame
        peer.acks_pings = False
        stream = peer.raw.conn.get_next_available_stream_id()
        partial = hyperframe.frame.HeadersFrame(stream, data=b"\x83\x86")  # :method POST, http
        peer.sock.sendall(partial.serialize())
        return peer.read_until_closed()


async def test_a_header_block_that_never_ends_closes_the_connection() -> None:
    async with BlazeServer(APP, port=0, header_timeout=SHORT) as server:
        closed = await anyio.to_thread.run_sync(_header_block_never_finished, server.port)
        await _still_serves(server)
    assert closed, "the server kept a connection whose header block never ended"


async def test_an_http_request_head_that_stalls_gets_408_as_json() -> None:
    partial_head = b"POST /models/add HTTP/1.1\r\nHost: x\r\n"
    async with BlazeServer(APP, port=0, http_port=0, header_timeout=SHORT) as server:
        received, closed = await anyio.to_thread.run_sync(
            _http_until_closed, server.http_port, partial_head
        )
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            url = f"http://127.0.0.1:{server.http_port}/models/add"
            normal = await http.post(url, json={"a": 1, "b": 2})
    status, body = _http_reply(received)
    assert status == 408
    assert set(body) == {"code", "message"} and "header_timeout" in body["message"]
    assert closed
    assert normal.json() == {"result": 3}


def _stalled_message_beside_a_live_call(port: int) -> tuple[Answer, Answer, Answer, bool]:
    """A client stream with one whole message, held open; beside it on the same connection one
    whose message stops after 10 of its 100 declared bytes. Then the live stream's last
    message, and a new call."""
    with _Peer(port) as peer:
        live = peer.open(TOTAL)
        peer.send(live, grpc_message(_number(1)))
        stalled = peer.open(TOTAL)
        peer.send(stalled, grpc_message(b"\x08\x01" * 5, declared=100))
        timed_out = peer.answer(stalled)
        peer.send(live, grpc_message(_number(2)), end_stream=True)
        return timed_out, peer.answer(live), peer.unary(ADD, ADD_1_2), peer.closed


async def test_a_message_that_stops_arriving_is_deadline_exceeded_and_the_rest_goes_on() -> None:
    async with BlazeServer(APP, port=0, message_timeout=SHORT) as server:
        timed_out, live, after, closed = await anyio.to_thread.run_sync(
            _stalled_message_beside_a_live_call, server.port
        )
    assert timed_out.status == "4", (timed_out.status, timed_out.reset)  # DEADLINE_EXCEEDED
    assert "message_timeout" in timed_out.message
    assert live.status == "0" and _messages(live.data) == [THREE]
    assert after.status == "0" and _messages(after.data) == [THREE]
    assert not closed


def _unary_without_its_message(port: int) -> tuple[Answer, Answer, bool]:
    """A unary call's HEADERS and no DATA, then a whole call on the same connection."""
    with _Peer(port) as peer:
        stream = peer.open(ADD)
        return peer.answer(stream), peer.unary(ADD, ADD_1_2), peer.closed


async def test_a_unary_call_whose_message_never_comes_is_deadline_exceeded() -> None:
    async with BlazeServer(APP, port=0, message_timeout=SHORT) as server:
        timed_out, after, closed = await anyio.to_thread.run_sync(
            _unary_without_its_message, server.port
        )
    assert timed_out.status == "4", (timed_out.status, timed_out.reset)  # DEADLINE_EXCEEDED
    assert "message_timeout" in timed_out.message
    assert after.status == "0" and _messages(after.data) == [THREE]
    assert not closed


def _whole_messages_far_apart(port: int, path: str, messages: list[bytes]) -> Answer:
    """A stream opened with HEADERS only, each whole message sent OUTLAST after the last."""
    with _Peer(port) as peer:
        stream = peer.open(path)
        for i, message in enumerate(messages):
            peer.read_for(OUTLAST)
            peer.send(stream, grpc_message(message), end_stream=i == len(messages) - 1)
        return peer.answer(stream)


@pytest.mark.parametrize(
    ("path", "messages", "replies"),
    [
        (TOTAL, [_number(1), _number(1), _number(1)], [THREE]),
        (ECHO, [_text("a"), _text("b")], [_text("A"), _text("B")]),
    ],
    ids=["client stream", "bidirectional"],
)
async def test_gaps_between_whole_messages_are_not_bounded_by_message_timeout(
    path: str, messages: list[bytes], replies: list[bytes]
) -> None:
    async with BlazeServer(APP, port=0, message_timeout=SHORT) as server:
        answer = await anyio.to_thread.run_sync(
            _whole_messages_far_apart, server.port, path, messages
        )
    assert answer.status == "0", (answer.status, answer.message, answer.reset)
    assert _messages(answer.data) == replies


async def test_an_http_body_that_stops_arriving_gets_408_as_json() -> None:
    request = (
        b"POST /models/add HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"a": 1, "'
    )
    async with BlazeServer(APP, port=0, http_port=0, message_timeout=SHORT) as server:
        received, closed = await anyio.to_thread.run_sync(
            _http_until_closed, server.http_port, request
        )
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            url = f"http://127.0.0.1:{server.http_port}/models/add"
            normal = await http.post(url, json={"a": 1, "b": 2})
    status, body = _http_reply(received)
    assert status == 408
    assert set(body) == {"code", "message"} and "message_timeout" in body["message"]
    assert closed
    assert normal.json() == {"result": 3}


def _idle_after_a_call(port: int) -> tuple[Answer, bool, list[int]]:
    with _Peer(port) as peer:
        answer = peer.unary(ADD, ADD_1_2)
        return answer, peer.read_until_closed(), peer.goaways


async def test_an_idle_connection_gets_goaway_no_error_and_is_closed() -> None:
    async with BlazeServer(APP, port=0, idle_timeout=SHORT) as server:
        answer, closed, goaways = await anyio.to_thread.run_sync(_idle_after_a_call, server.port)
        await _still_serves(server)
    assert answer.status == "0"
    assert closed, "the server kept an idle connection open"
    assert goaways and set(goaways) == {0}, goaways  # NO_ERROR


def _client_stream_held_past(port: int, seconds: float) -> tuple[Answer, bool, list[int]]:
    """A client stream opened with HEADERS only, then silence for `seconds`, then its messages:
    its answer, and whether the connection was closed or got a GOAWAY meanwhile."""
    with _Peer(port) as peer:
        stream = peer.open(TOTAL)
        peer.read_for(seconds)
        closed, goaways = peer.closed, list(peer.goaways)
        for n in (1, 1, 1):
            peer.send(stream, grpc_message(_number(n)))
        peer.send(stream, b"", end_stream=True)
        return peer.answer(stream), closed, goaways


async def test_a_connection_with_a_call_open_is_not_idle() -> None:
    async with BlazeServer(APP, port=0, idle_timeout=SHORT) as server:
        answer, closed, goaways = await anyio.to_thread.run_sync(
            _client_stream_held_past, server.port, OUTLAST
        )
    assert not closed and not goaways
    assert answer.status == "0", (answer.status, answer.message)
    assert _messages(answer.data) == [THREE]


def _answering_pings(port: int) -> tuple[bool, bool, list[int], Answer]:
    """A client that answers every PING, until five came: whether they came, whether the
    connection was closed or got a GOAWAY, and a call on it afterwards."""
    with _Peer(port) as peer:
        pinged = peer.read_until(lambda: peer.pings >= 5)
        return pinged, peer.closed, peer.goaways, peer.unary(ADD, ADD_1_2)


async def test_keepalive_pings_come_and_a_client_that_answers_keeps_its_connection() -> None:
    async with BlazeServer(APP, port=0, keepalive_interval=0.2, keepalive_timeout=SHORT) as server:
        pinged, closed, goaways, answer = await anyio.to_thread.run_sync(
            _answering_pings, server.port
        )
    assert pinged, "the server sent fewer than five PINGs"
    assert not closed and not goaways
    assert answer.status == "0" and _messages(answer.data) == [THREE]


def _silent_to_pings(port: int) -> tuple[bool, int]:
    with _Peer(port, acks_pings=False) as peer:
        return peer.read_until_closed(), peer.pings


async def test_a_client_that_never_answers_a_ping_is_closed() -> None:
    async with BlazeServer(APP, port=0, keepalive_interval=0.2, keepalive_timeout=SHORT) as server:
        closed, pings = await anyio.to_thread.run_sync(_silent_to_pings, server.port)
        await _still_serves(server)
    assert pings >= 1
    assert closed, "the server kept a connection whose PINGs went unanswered"


async def test_a_stream_running_past_max_connection_age_finishes_after_its_goaway(
    probe: Probe,
) -> None:
    app = _app(probe)
    async with BlazeServer(app, port=0, max_connection_age=0.5) as server:
        peer = await anyio.to_thread.run_sync(_Peer, server.port)
        address = peer.address
        try:
            stream = await anyio.to_thread.run_sync(peer.call, WATCH, _number(3))
            await probe.wait_started()
            got_goaway = await anyio.to_thread.run_sync(peer.read_until, lambda: bool(peer.goaways))
            probe.release()
            answer = await anyio.to_thread.run_sync(peer.answer, stream)
        finally:
            probe.release()
            peer.close()
    assert got_goaway, "no GOAWAY came past max_connection_age"
    assert peer.goaways[0] == 0  # NO_ERROR
    assert answer.status == "0", (answer.status, answer.message, answer.reset)
    assert _messages(answer.data) == [_text(address)] * 3


def _stock_calls_until_three_connections(port: int) -> tuple[set[bytes], list[Any]]:
    """Unary calls through one stock grpcio channel, one after another, until they have come
    over three connections (or WAIT_S passed): the callers' addresses the model saw, and the
    status of each call that failed."""
    seen: set[bytes] = set()
    failed: list[Any] = []
    deadline = time.monotonic() + WAIT_S
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        peer = channel.unary_unary(PEER)
        while len(seen) < 3 and time.monotonic() < deadline:
            try:
                seen.add(peer(b"", timeout=WAIT_S))
            except grpc.RpcError as err:
                failed.append(err.code())
    return seen, failed


async def test_stock_grpcio_calls_all_succeed_across_max_connection_age() -> None:
    async with BlazeServer(APP, port=0, max_connection_age=SHORT) as server:
        seen, failed = await anyio.to_thread.run_sync(
            _stock_calls_until_three_connections, server.port
        )
    assert failed == []
    assert len(seen) == 3, f"the calls came over {len(seen)} connection(s)"


async def test_blaze_client_calls_all_succeed_across_max_connection_age(probe: Probe) -> None:
    app = _app(probe)
    async with (
        BlazeServer(app, port=0, max_connection_age=SHORT) as server,
        BlazeClient(port=server.port, app=app, timeout=WAIT_S) as client,
    ):
        with anyio.fail_after(WAIT_S):
            async with contextlib.aclosing(client.stream("watch", n=3)) as stream:
                first = await anext(stream)  # the stream's connection
                while (now := await client.predict("peer")) == first:
                    pass  # until the client moved to a new connection: the stream's got GOAWAY
                probe.release()
                rest = [item async for item in stream]
            seen = {first, now}
            while len(seen) < 3:
                seen.add(await client.predict("peer"))
    assert [first, *rest] == [first] * 3


async def test_a_call_past_max_connection_age_grace_is_ended_and_its_connection_closed(
    probe: Probe,
) -> None:
    app = _app(probe)
    async with BlazeServer(
        app, port=0, max_connection_age=SHORT, max_connection_age_grace=SHORT
    ) as server:
        peer = await anyio.to_thread.run_sync(_Peer, server.port)
        try:
            stream = await anyio.to_thread.run_sync(peer.call, WATCH, _number(2))
            await probe.wait_started()  # and it waits at the gate, which stays shut
            answer = await anyio.to_thread.run_sync(peer.answer, stream)
            ended = answer.ended or answer.reset is not None or peer.closed
            closed = await anyio.to_thread.run_sync(peer.read_until_closed)
        finally:
            probe.release()
            peer.close()
        await _still_serves(server)
    assert ended, "the call outlived max_connection_age_grace"
    assert answer.status != "0"
    assert closed, "the connection outlived max_connection_age_grace"
    assert peer.goaways[:1] == [0]  # NO_ERROR, at the age


def _stock_add(port: int) -> tuple[Any, str, bytes]:
    """One unary call through stock grpcio on a new connection: its code, details, reply."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = channel.unary_unary(ADD)(ADD_1_2, timeout=WAIT_S)
        except grpc.RpcError as err:
            return err.code(), err.details() or "", b""
    return grpc.StatusCode.OK, "", reply


@dataclass(frozen=True, slots=True)
class _Held:
    """What max_calls did to a call past the limit, and after the held calls ended."""

    refused: tuple[Any, str, bytes]
    finished: list[Answer]
    after: tuple[Any, str, bytes]


def _client_streams_held_on_two_connections(port: int) -> _Held:
    """Three client streams held open (HEADERS only) on two connections, and a unary call on a
    third; then two held streams finish, the third is reset, and another unary call."""
    with _Peer(port) as first, _Peer(port) as second:
        held = [first.open(TOTAL), first.open(TOTAL)]
        reset = second.open(TOTAL)
        first.ping()
        second.ping()
        refused = _stock_add(port)
        for stream in held:
            first.send(stream, grpc_message(THREE), end_stream=True)
        finished = [first.answer(stream) for stream in held]
        second.reset(reset)
        return _Held(refused, finished, _stock_add(port))


async def test_max_calls_counts_calls_held_open_across_connections() -> None:
    async with BlazeServer(APP, port=0, max_calls=3) as server:
        held = await anyio.to_thread.run_sync(_client_streams_held_on_two_connections, server.port)
    code, details, _ = held.refused
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert "max_calls" in details
    assert [(a.status, _messages(a.data)) for a in held.finished] == [("0", [THREE])] * 2
    assert held.after == (grpc.StatusCode.OK, "", THREE)


def _unary_calls_held(port: int) -> tuple[Answer, list[Answer], Answer]:
    """Three unary calls held (HEADERS only), a fourth whole one; then the three finish, and a
    fifth call."""
    with _Peer(port) as peer:
        held = [peer.open(ADD) for _ in range(3)]
        peer.ping()
        refused = peer.unary(ADD, ADD_1_2)
        for stream in held:
            peer.send(stream, grpc_message(ADD_1_2), end_stream=True)
        finished = [peer.answer(stream) for stream in held]
        return refused, finished, peer.unary(ADD, ADD_1_2)


async def test_max_calls_counts_unary_calls_from_their_headers() -> None:
    async with BlazeServer(APP, port=0, max_calls=3) as server:
        refused, finished, after = await anyio.to_thread.run_sync(_unary_calls_held, server.port)
    assert refused.status == "8", (refused.status, refused.reset)  # RESOURCE_EXHAUSTED
    assert "max_calls" in refused.message
    assert [(a.status, _messages(a.data)) for a in finished] == [("0", [THREE])] * 3
    assert after.status == "0" and _messages(after.data) == [THREE]


def _health_while_full(port: int) -> tuple[int, tuple[Any, str, bytes]]:
    """Three client streams held (HEADERS only); then a health check and a model call."""
    with _Peer(port) as peer:
        for _ in range(3):
            peer.open(TOTAL)
        peer.ping()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S
            )
        return int(health.status), _stock_add(port)


async def test_health_checks_are_answered_while_max_calls_is_full() -> None:
    async with BlazeServer(APP, port=0, max_calls=3) as server:
        health, model_call = await anyio.to_thread.run_sync(_health_while_full, server.port)
    assert health == health_pb2.HealthCheckResponse.SERVING
    assert model_call[0] == grpc.StatusCode.RESOURCE_EXHAUSTED, model_call


CLI_APP = """\
from blazerpc import BlazeApp

app = BlazeApp()


@app.model("add")
async def add(a: int, b: int) -> int:
    return a + b
"""


@pytest.mark.parametrize("by", ["flag", "variable"])
def test_blaze_serve_applies_message_timeout_from_its_flag_and_variable(
    by: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "adder.py").write_text(CLI_APP, encoding="utf-8")
    options = ("--message-timeout", str(SHORT)) if by == "flag" else ()
    if by == "variable":
        monkeypatch.setenv("BLAZE_MESSAGE_TIMEOUT", str(SHORT))
    with blaze_serve("adder.py:app", *options, cwd=tmp_path) as served:
        timed_out, after, _ = _unary_without_its_message(served.port)
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=WAIT_S) == 0
    assert timed_out.status == "4", (timed_out.status, timed_out.reset)  # DEADLINE_EXCEEDED
    assert "message_timeout" in timed_out.message
    assert after.status == "0"


# What an adversarial review of the limits above found: each test failed before its fix.


def _headers_and_reset_at_once(port: int, count: int) -> None:
    """`count` calls whose HEADERS and RST_STREAM reach the server in one read each: grpclib
    cancels each call's task before its first step."""
    with RawH2(port) as raw:
        for _ in range(count):
            stream = raw.conn.get_next_available_stream_id()
            raw.conn.send_headers(
                stream,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", ADD),
                    (":authority", "127.0.0.1"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ],
            )
            raw.conn.reset_stream(stream)
            raw.flush()
        raw.ping()


async def test_calls_reset_before_they_start_give_their_slot_of_max_calls_back() -> None:
    async with BlazeServer(APP, port=0, max_calls=5) as server:
        await anyio.to_thread.run_sync(_headers_and_reset_at_once, server.port, 20)
        with _Peer(server.port) as peer:
            answer = await anyio.to_thread.run_sync(peer.unary, ADD, ADD_1_2)
    assert (answer.status, answer.message) == ("0", "")
    assert _messages(answer.data) == [THREE]


def _window_app(probe: Probe) -> BlazeApp:
    app = BlazeApp()

    @app.model("add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.model("count")
    async def count(blobs: AsyncIterator[bytes]) -> int:
        """Reads one blob, waits at the gate while the rest fill the connection's window."""
        seen = 0
        async for _ in blobs:
            seen += 1
            if seen == 1:
                probe.start()
                await probe.until_released()
        return seen

    return app


async def test_a_call_held_up_by_the_servers_own_window_is_not_a_stalled_message(
    probe: Probe,
) -> None:
    """One call's unread data fills the connection's receive window (grpclib credits it when the
    model reads), so the next call's message cannot come: not that caller's stall."""
    blob = b"\x0a\x80\x80\x40" + b"x" * (1024 * 1024)  # CountRequest(blobs=1 MiB)
    async with BlazeServer(_window_app(probe), port=0, message_timeout=SHORT) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            count = channel.stream_unary(f"{SERVICE}/PredictCount")
            add = channel.unary_unary(f"{SERVICE}/PredictAdd")
            counted = count.future(iter([blob] * 6), timeout=WAIT_S)
            await probe.wait_started(1)
            added = add.future(ADD_1_2, timeout=WAIT_S)
            await anyio.sleep(OUTLAST)  # the add call waits on the window, past message_timeout
            probe.release()
            results = await anyio.to_thread.run_sync(lambda: (counted.result(), added.result()))
    assert results == (b"\x08\x06", THREE)


def _trickled_headers(port: int) -> bool:
    """A HEADERS frame sent a byte at a time, slower than header_timeout allows for the whole:
    whether the server closes the connection."""
    with _Peer(port) as peer:
        peer.ping()
        block = hpack.Encoder().encode(
            [(":method", "POST"), (":scheme", "http"), (":path", ADD), (":authority", "x")]
        )
        frame = hyperframe.frame.HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize()
        for i in range(len(frame) - 1):  # never the last byte
            try:
                peer.sock.sendall(frame[i : i + 1])
            except (BrokenPipeError, ConnectionResetError):
                return True
            peer.read_for(SHORT / 3)
            if peer.closed:
                return True
        return peer.read_until_closed()


async def test_a_header_frame_trickled_byte_by_byte_closes_its_connection() -> None:
    async with BlazeServer(APP, port=0, header_timeout=SHORT) as server:
        closed = await anyio.to_thread.run_sync(_trickled_headers, server.port)
        await _still_serves(server)
    assert closed


def _slow_app(probe: Probe) -> BlazeApp:
    app = BlazeApp()

    @app.model("held")
    async def held() -> str:
        probe.start()
        await probe.until_released()
        return "done"

    return app


def _read_answer(sock: socket.socket) -> bytes:
    """Bytes from `sock` until one whole JSON answer is in, or the server closes."""
    received = b""
    while b"\r\n\r\n" not in received or b"}" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


async def test_a_pipelined_head_is_not_timed_while_the_answer_before_it_goes_out(
    probe: Probe,
) -> None:
    """A request to a held model, then the start of a second request behind it, left unfinished
    for longer than header_timeout while the first is still being answered."""
    async with BlazeServer(_slow_app(probe), port=0, http_port=0, header_timeout=SHORT) as server:
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=WAIT_S) as sock:
            first = b"POST /models/held HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
            await anyio.to_thread.run_sync(sock.sendall, first)
            await probe.wait_started(1)
            await anyio.to_thread.run_sync(sock.sendall, b"POST /models/held HTTP/1.1\r\nHo")
            await anyio.sleep(OUTLAST)  # the second head is late; the first answer is not out
            probe.release()
            received = await anyio.to_thread.run_sync(_read_answer, sock)
    status, body = _http_reply(received[: received.index(b"}") + 1])
    assert (status, body) == (200, {"result": "done"})


def _answer_three(conn: Any, stream_id: int) -> None:
    """A whole gRPC answer (headers, the message 3, status OK) on `stream_id`."""
    conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
    conn.send_data(stream_id, grpc_message(THREE))
    conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)


class _GoawayServer:
    """A bare HTTP/2 server: once two calls are open it says GOAWAY(NO_ERROR) naming the first
    as the last it serves, then answers that one when `answer_first` is set."""

    def __init__(self) -> None:
        self.first_opened = asyncio.Event()
        self.answer_first = asyncio.Event()
        self.connections = 0

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import h2.config
        import h2.connection
        import h2.events

        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        self.connections += 1
        opened: list[int] = []
        if self.connections > 1:  # the call sent again: answered at once
            while not opened:
                for event in conn.receive_data(await reader.read(65536)):
                    if isinstance(event, h2.events.RequestReceived):
                        opened.append(event.stream_id)
            _answer_three(conn, opened[0])
            writer.write(conn.data_to_send())
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            return
        while len(opened) < 2:
            for event in conn.receive_data(await reader.read(65536)):
                if isinstance(event, h2.events.RequestReceived):
                    opened.append(event.stream_id)
                    self.first_opened.set()
            writer.write(conn.data_to_send())
        goaway = hyperframe.frame.GoAwayFrame(0, last_stream_id=opened[0], error_code=0)
        writer.write(goaway.serialize())  # past h2, which then would send nothing
        await self.answer_first.wait()
        _answer_three(conn, opened[0])
        writer.write(conn.data_to_send())
        await writer.drain()
        writer.close()


async def test_blaze_client_sends_again_at_once_a_call_a_goaway_left_unserved() -> None:
    """GOAWAY(NO_ERROR) names the last call the server serves: BlazeClient's later call, never
    processed, is sent again on a new connection (and answered there) while the served one
    waits on, instead of waiting for the first connection to close."""
    server = _GoawayServer()
    listening = await asyncio.start_server(server.connection, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    results: dict[str, object] = {}
    try:
        async with BlazeClient(port=port, app=APP, timeout=WAIT_S) as client:

            async def served() -> None:
                results["served"] = await client.predict("add", a=1, b=2)

            with anyio.fail_after(WAIT_S):
                async with anyio.create_task_group() as calls:
                    calls.start_soon(served)
                    await server.first_opened.wait()
                    results["unserved"] = await client.predict("add", a=1, b=2)
                    server.answer_first.set()  # only once the unserved call was answered
    finally:
        listening.close()
        await listening.wait_closed()
    assert results == {"unserved": 3, "served": 3}
    assert server.connections == 2
