"""The one door to grpclib's and h2's private names: every other module uses their public API.

Written for grpclib 0.4.9 and h2 4.2 to 4.4 (pyproject.toml pins `grpclib>=0.4.9,<0.5` and
`h2>=4.2,<5`). What it relies on:

- `grpclib._typing.IServable`: the type of a service object (`__mapping__`).
- `grpclib.server.Server._protocol_factory`: where grpclib makes one `H2Protocol` per
  connection, so the server can list its connections and close them (grpclib's own `close()`
  leaves them open). grpclib builds each connection's h2 state in `connection_made`, so later
  overrides of the HTTP/2 edge belong on the protocol made here.
- `grpclib.server.Server._server`: the listening asyncio server, to stop accepting connections
  while the open ones finish.
- `H2Protocol.processor.close()`: closes one connection.
- `grpclib.server.Stream._stream.recv_data()`: reads the HTTP/2 stream under a gRPC stream, so
  the server reads the 5-byte message prefix itself and never buffers a message over its limit.
  When the caller's data ends short of what was asked, grpclib's `Buffer.read` raises
  AssertionError; `Buffer._acked_size` then says how many bytes there are, to read them.

- The hardened edge (`GrpcServer`): the protocol made by `_protocol_factory` becomes an
  `_EdgeProtocol` (its class swapped: same state), whose `connection_made` reaches the h2
  connection as `Connection._connection`. That connection becomes an `_EdgeH2Connection`,
  overriding `H2Connection._receive_headers_frame` (re-registered in `_frame_dispatch_table`),
  `_handle_data_on_closed_stream` and `_local_settings_acked`, and reading and marking how
  streams closed (`_stream_closed_by`, `_closed_streams`); resets are counted in
  `_receive_rst_stream_frame`, and its `incoming_buffer` (a `FrameBuffer`) becomes an
  `_EdgeFrameBuffer` whose `_update_header_buffer` reads `_headers_buffer` to spot a
  CONTINUATION flood. Past a budget the protocol says GOAWAY(ENHANCE_YOUR_CALM). The
  grpclib `Handler.accept` of each connection is wrapped to send an oversized call elsewhere.

`missing_internals()` lists what an upgrade removed; a unit test fails on it with the list.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from grpclib import protocol as _protocol
from grpclib import server as _server
from grpclib._typing import IServable
from grpclib.const import Cardinality, Handler
from grpclib.exceptions import GRPCError
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import TooManyStreamsError
from h2.frame_buffer import CONTINUATION_BACKLOG, FrameBuffer
from h2.settings import SettingCodes
from h2.stream import StreamClosedBy
from hyperframe.frame import HeadersFrame, RstStreamFrame

from blazerpc.errors import LimitError, to_status

log = logging.getLogger(__name__)

__all__ = (
    "GRPCLIB_RANGE",
    "H2_RANGE",
    "GrpcServer",
    "IServable",
    "RequestReader",
    "missing_internals",
    "request_reader",
)

GRPCLIB_RANGE = ">=0.4.9,<0.5"
"""The grpclib releases this module was written and tested for."""
H2_RANGE = ">=4.2,<5"
"""The h2 releases the HTTP/2 overrides were written and tested for."""


RequestReader = Callable[[int], Awaitable[bytes]]
"""`await read(size)`: up to `size` bytes of the request; fewer when the caller ended its side,
b"" when it sent nothing more."""


def request_reader(stream: _server.Stream[Any, Any]) -> RequestReader:
    """The reader of the HTTP/2 stream under a gRPC stream, taken once per call.

    grpclib's `Buffer.read` asserts when the caller ends its side with fewer bytes than asked
    (a message cut short): the reader returns the bytes there are instead, so the caller of
    the reader can say what was wrong (INVALID_ARGUMENT), not INTERNAL.
    """
    h2_stream = stream._stream

    async def read(size: int) -> bytes:
        try:
            data: bytes = await h2_stream.recv_data(size)
        except AssertionError:  # "Received less data than expected": the rest is buffered
            buffer = h2_stream.buffer
            data = await buffer.read(buffer._acked_size)
        return data

    return read


OVERSIZED_PATH = "/blazerpc.edge.Refused/OversizedMetadata"
"""Where a call whose metadata is over the limit is sent instead of its own method."""
_OVERSIZED_SIZE = "x-blazerpc-metadata-bytes"
RESETS_PER_SECOND = 200
"""Stream resets a client may send on one connection in a second. A client that cancels
calls resets them, but not hundreds a second on one connection; an attacker opening and
resetting streams (HTTP/2 Rapid Reset, CVE-2023-44487) makes the server start work it never
finishes. Past the budget: GOAWAY(ENHANCE_YOUR_CALM), and the connection closes."""
_LINGER_S = 1.0
"""How long a connection told GOAWAY still reads (and drops) what its client sends: closed at
once, the socket would answer those bytes with a TCP reset, which can destroy the GOAWAY
before the client reads it."""
HEADER_LIST_HARD_CAP = 1024 * 1024
"""Header blocks up to this size are decoded whole, so HPACK stays in step and a call over
`max_header_bytes` fails alone; past it, the connection is closed (RFC 9113 allows no less)."""


class GrpcServer(_server.Server):
    """grpclib's Server, able to stop listening and to close its connections, and with a
    hardened HTTP/2 edge: per-connection stream limit set explicitly (`max_connection_streams`,
    excess streams refused one by one with REFUSED_STREAM) and calls with more than
    `max_header_bytes` of metadata failed alone with RESOURCE_EXHAUSTED.

    grpclib's own close() stops listening but leaves the open connections running.
    """

    def __init__(
        self,
        services: Any,
        *args: Any,
        max_header_bytes: int = 64 * 1024,
        max_connection_streams: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__([*services, _Oversized()], *args, **kwargs)
        self._protocols: weakref.WeakSet[_protocol.H2Protocol] = weakref.WeakSet()
        self._max_header_bytes = max_header_bytes
        self._max_connection_streams = max_connection_streams

    def _protocol_factory(self) -> _protocol.H2Protocol:
        protocol = super()._protocol_factory()
        protocol.__class__ = _EdgeProtocol  # grpclib makes it; we add to connection_made
        edge: _EdgeProtocol = protocol  # type: ignore[assignment]
        edge.max_header_bytes = self._max_header_bytes
        edge.max_connection_streams = self._max_connection_streams
        accept = protocol.handler.accept
        limit = self._max_header_bytes

        def accept_within_limit(stream: Any, headers: Any, release_stream: Any) -> None:
            size = sum(len(name) + len(value) + 32 for name, value in headers)  # RFC 9113 6.5.2
            if size > limit:  # the call goes to a handler that refuses it, and only it
                kept = [(n, v) for n, v in headers if n.startswith(":") or n in _KEPT]
                headers = [*_rerouted(kept), (_OVERSIZED_SIZE, str(size))]
            accept(stream, headers, release_stream)

        protocol.handler.accept = accept_within_limit  # type: ignore[method-assign]
        self._protocols.add(protocol)
        return protocol

    def stop_listening(self) -> None:
        """Accept no new connections; the open ones carry on."""
        if self._server is not None:
            self._server.close()

    def close_connections(self) -> None:
        """Close every client connection still open."""
        for protocol in list(self._protocols):
            processor = getattr(protocol, "processor", None)
            if processor is not None:
                processor.close("the server closed")


def missing_internals() -> list[str]:
    """The private grpclib names this module uses that the installed grpclib lacks."""
    wanted = {
        "grpclib.server.Server._protocol_factory": hasattr(_server.Server, "_protocol_factory"),
        "grpclib.server.Server._server": "self._server" in inspect.getsource(_server.Server),
        "grpclib.protocol.H2Protocol.processor": "processor"
        in getattr(_protocol.H2Protocol, "__annotations__", {}),
        "grpclib.protocol.EventsProcessor.close": callable(
            getattr(_protocol.EventsProcessor, "close", None)
        ),
        "grpclib.server.Stream._stream": "self._stream = stream"
        in inspect.getsource(_server.Stream.__init__),
        "grpclib.protocol.Stream.recv_data": inspect.iscoroutinefunction(
            getattr(_protocol.Stream, "recv_data", None)
        ),
        "grpclib.protocol.Buffer._acked_size": "self._acked_size"
        in inspect.getsource(_protocol.Buffer.__init__),
        "grpclib.protocol.Stream.buffer": "self.buffer = Buffer("
        in inspect.getsource(_protocol.Stream.init_stream),
    }
    h2_connection = H2Connection(H2Configuration(client_side=False))
    wanted |= {
        "grpclib.protocol.Connection._connection": "self._connection = connection"
        in inspect.getsource(_protocol.Connection.__init__),
        "grpclib.server.Handler.accept": callable(getattr(_server.Handler, "accept", None)),
        "h2.connection.H2Connection._receive_headers_frame": callable(
            getattr(H2Connection, "_receive_headers_frame", None)
        ),
        "h2.connection.H2Connection._local_settings_acked": callable(
            getattr(H2Connection, "_local_settings_acked", None)
        ),
        "h2.connection.H2Connection._frame_dispatch_table": HeadersFrame
        in getattr(h2_connection, "_frame_dispatch_table", {}),
        "h2.connection.H2Connection._closed_streams": hasattr(h2_connection, "_closed_streams"),
        "h2.connection.H2Connection._handle_data_on_closed_stream": callable(
            getattr(H2Connection, "_handle_data_on_closed_stream", None)
        ),
        "h2.frame_buffer.FrameBuffer._update_header_buffer": callable(
            getattr(FrameBuffer, "_update_header_buffer", None)
        ),
        "h2.frame_buffer.FrameBuffer._headers_buffer": hasattr(FrameBuffer(), "_headers_buffer"),
        "h2.connection.H2Connection.incoming_buffer": isinstance(
            getattr(h2_connection, "incoming_buffer", None), FrameBuffer
        ),
        "h2.connection.H2Connection._receive_rst_stream_frame": callable(
            getattr(H2Connection, "_receive_rst_stream_frame", None)
        ),
        "h2.connection.H2Connection._stream_closed_by": callable(
            getattr(H2Connection, "_stream_closed_by", None)
        ),
    }
    return [name for name, is_present in wanted.items() if not is_present]


_KEPT = {"content-type", "te", "grpc-timeout"}


def _rerouted(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(n, OVERSIZED_PATH if n == ":path" else v) for n, v in headers]


class _Oversized:
    """The handler of calls whose metadata is over the limit: RESOURCE_EXHAUSTED, alone."""

    def __init__(self) -> None:
        self._mapping = {
            OVERSIZED_PATH: Handler(self._refuse, Cardinality.STREAM_STREAM, bytes, bytes)
        }

    def __mapping__(self) -> dict[str, Any]:
        return self._mapping

    async def _refuse(self, stream: Any) -> None:
        size = (stream.metadata or {}).get(_OVERSIZED_SIZE, "?")
        error = LimitError(
            f"the call's metadata is {size} bytes, over the server's limit (max_header_bytes); "
            "send less metadata."
        )
        raise GRPCError(*to_status(error, "", service="metadata limit"))


class _EdgeProtocol(_protocol.H2Protocol):
    """grpclib's protocol, whose HTTP/2 connection refuses excess streams one by one and
    says GOAWAY(ENHANCE_YOUR_CALM) to a client that resets streams faster than the budget."""

    max_header_bytes = 64 * 1024
    max_connection_streams = 100

    _is_closing = False

    def data_received(self, data: bytes) -> None:
        if self._is_closing:
            return  # lingering after GOAWAY: what the client still sends is read and dropped
        try:
            super().data_received(data)
        except _OverBudget as budget:
            h2_conn = self.connection._connection
            h2_conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            self.connection.flush()
            peer = self.connection.get_peer().addr()
            log.warning("closed a connection from %s: %s", peer, budget)
            self._is_closing = True
            self.handler.close()  # its calls end now; the socket closes after a moment
            asyncio.get_running_loop().call_later(_LINGER_S, self.processor.close, str(budget))

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        h2_conn = self.connection._connection
        h2_conn.__class__ = _EdgeH2Connection  # same state, two methods changed
        table = h2_conn._frame_dispatch_table  # bound methods of the old class: rebind ours
        table[HeadersFrame] = h2_conn._receive_headers_frame
        table[RstStreamFrame] = h2_conn._receive_rst_stream_frame
        h2_conn.incoming_buffer.__class__ = _EdgeFrameBuffer
        h2_conn.decoder.max_header_list_size = HEADER_LIST_HARD_CAP
        h2_conn.update_settings(
            {
                SettingCodes.MAX_CONCURRENT_STREAMS: self.max_connection_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.max_header_bytes,
            }
        )
        self.connection.flush()


class _OverBudget(Exception):
    """A client went past a budget of its connection: GOAWAY(ENHANCE_YOUR_CALM)."""


class _EdgeFrameBuffer(FrameBuffer):
    """h2's frame buffer: a header block of more CONTINUATION frames than h2 allows is a
    flood, answered GOAWAY(ENHANCE_YOUR_CALM) rather than a connection dropped unexplained."""

    def _update_header_buffer(self, f: Any) -> Any:
        if self._headers_buffer and len(self._headers_buffer) >= CONTINUATION_BACKLOG:
            raise _OverBudget(f"a header block of over {CONTINUATION_BACKLOG} CONTINUATION frames")
        return super()._update_header_buffer(f)


class _EdgeH2Connection(H2Connection):
    """h2's connection: a stream past the limit is refused alone, its headers still decoded;
    resets are counted against a budget per second."""

    _resets = 0
    _resets_since = 0.0

    def _receive_rst_stream_frame(self, frame: Any) -> Any:
        now = time.monotonic()
        if now - self._resets_since > 1.0:
            self._resets, self._resets_since = 0, now
        self._resets += 1
        if self._resets > RESETS_PER_SECOND:
            raise _OverBudget(f"over {RESETS_PER_SECOND} stream resets a second (Rapid Reset?)")
        return super()._receive_rst_stream_frame(frame)

    def _receive_headers_frame(self, frame: Any) -> Any:
        try:  # h2 counts the open streams itself (a walk of them all): not twice
            return super()._receive_headers_frame(frame)
        except TooManyStreamsError:  # raised before h2 decoded the block: decode it now
            self.decoder.decode(frame.data)  # keep HPACK in step with the client
            self.highest_inbound_stream_id = max(self.highest_inbound_stream_id, frame.stream_id)
            self._closed_streams[frame.stream_id] = StreamClosedBy.SEND_RST_STREAM
            refusal = RstStreamFrame(frame.stream_id)
            refusal.error_code = ErrorCodes.REFUSED_STREAM
            return [refusal], []

    def _handle_data_on_closed_stream(self, events: Any, exc: Any, frame: Any) -> Any:
        """DATA on a stream we reset: already in flight when we did, so ignored (RFC 9113
        5.1), its bytes still returned to the connection's window; h2 would answer each with
        RST_STREAM(STREAM_CLOSED), which grpc-core reports as an INTERNAL error."""
        frames, events = super()._handle_data_on_closed_stream(events, exc, frame)
        if self._stream_closed_by(frame.stream_id) is StreamClosedBy.SEND_RST_STREAM:
            frames = [f for f in frames if not isinstance(f, RstStreamFrame)]
        return frames, events

    def _local_settings_acked(self) -> Any:
        changes = super()._local_settings_acked()
        self.decoder.max_header_list_size = HEADER_LIST_HARD_CAP  # the advertised limit is per call
        return changes
