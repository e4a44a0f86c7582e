"""A raw HTTP/2 client for abuse tests: frames exactly as a test writes them, answers as sent.

Stock clients never send a short DATA frame, a second stream past the limit or a header block
of 70 KiB; an attacker does. `RawH2` speaks HTTP/2 through the `h2` package on a plain socket,
blocking (run it in a worker thread), and reads what the server answers on each stream:
headers, data, trailers, or a reset.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import hyperframe.frame

from .support import WAIT_S

__all__ = ("Answer", "RawH2", "grpc_message")


def grpc_message(payload: bytes, *, declared: int | None = None) -> bytes:
    """A gRPC length-prefixed message; `declared` lies about its length."""
    return struct.pack(">?I", False, len(payload) if declared is None else declared) + payload


@dataclass
class Answer:
    """What the server sent on one stream."""

    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    reset: int | None = None
    """The RST_STREAM error code, if the server reset the stream."""
    resets: list[int] = field(default_factory=list)
    """Every RST_STREAM the server sent on the stream, in order (raw frames included)."""
    ended: bool = False

    @property
    def status(self) -> str | None:
        """The gRPC status: in the trailers, or in the headers of a trailers-only answer."""
        return self.trailers.get("grpc-status", self.headers.get("grpc-status"))

    @property
    def message(self) -> str:
        return self.trailers.get("grpc-message", self.headers.get("grpc-message", ""))


class RawH2:
    """One HTTP/2 connection to 127.0.0.1:`port`, as a client."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        self.answers: dict[int, Answer] = {}
        self.closed_by_server = False
        """The server closed or reset the connection."""
        self._pinged = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed_by_server:
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                self.closed_by_server = True

    def grpc_headers(self, path: str, *extra: tuple[str, str], end_stream: bool = False) -> int:
        """Open a stream with a gRPC call's HEADERS; its id."""
        stream_id: int = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *extra,
        ]
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        self.answers[stream_id] = Answer()
        self.flush()
        return stream_id

    def data(self, stream_id: int, payload: bytes, *, end_stream: bool = False) -> None:
        self.conn.send_data(stream_id, payload, end_stream=end_stream)
        self.flush()

    def ping(self) -> None:
        """A PING, answered: the server has processed every frame sent before it (and made the
        handler tasks of the streams they opened, which run before anything it reads later)."""
        self.conn.ping(b"blazerpc")
        self.flush()
        self._pinged = False
        while not (self._pinged or self.closed_by_server):
            self._receive()

    def raw_data(self, stream_id: int, payload: bytes) -> None:
        """A DATA frame written as bytes, past the client's own state machine: what a client
        that has not yet seen the server end the stream still sends."""
        frame = hyperframe.frame.DataFrame(stream_id, data=payload)
        self.sock.sendall(frame.serialize())

    def raw_frames_for(self, seconds: float) -> list[hyperframe.frame.Frame]:
        """The frames the server sends in the next `seconds`, parsed here and not given to the
        client's state machine (which would drop frames on a stream it considers closed)."""
        self.sock.settimeout(seconds)
        received = b""
        try:
            while chunk := self.sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            self.sock.settimeout(WAIT_S)
        frames = []
        while len(received) >= 9:
            frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(received[:9]))
            if len(received) < 9 + length:
                break
            frame.parse_body(memoryview(received[9 : 9 + length]))
            frames.append(frame)
            received = received[9 + length :]
        return frames

    def answer(self, stream_id: int) -> Answer:
        """Read until the stream ends, is reset, or the server closes the connection."""
        answer = self.answers[stream_id]
        while not (answer.ended or answer.reset is not None or self.closed_by_server):
            self._receive()
        return answer

    def _receive(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed_by_server = True
            return
        for event in self.conn.receive_data(chunk):
            self._take(event)
        self.flush()

    def _take(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        answer = self.answers.get(stream_id) if stream_id else None
        if isinstance(event, h2.events.PingAckReceived):
            self._pinged = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed_by_server = True
        elif answer is None:
            return
        elif isinstance(event, h2.events.ResponseReceived):
            answer.headers = dict(event.headers)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.TrailersReceived):
            answer.trailers = dict(event.headers)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            answer.data += event.data or b""
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            answer.ended = True
        elif isinstance(event, h2.events.StreamReset):
            answer.reset = int(event.error_code or 0)
            answer.resets.append(answer.reset)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
