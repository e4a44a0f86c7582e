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
  grpclib `Handler.accept` of each connection is wrapped to send an oversized call, or one
  past `max_calls`, elsewhere, and to keep the request headers on grpclib's stream.
- Time limits: `Server.start` is replaced to pass `ssl_handshake_timeout` (it sets
  `Server._server` and `_server_closed_fut` as grpclib does); `_receive_settings_frame` notes
  the preface and `_receive_ping_frame` the answer to the drain PING; a read that waits is
  seen in the `_getters` of its grpclib `Buffer._unacked` queue (and failed through them when
  it stalls), its progress in the stream's `data_received`; a GOAWAY that lets running calls
  finish is written to `Connection._transport` past h2's state machine (h2 moves
  to CLOSED at any GOAWAY, and then sends nothing). grpclib's keepalive is configured through
  `Configuration`'s underscored fields (`_keepalive_time`, ...).
- Compression: `decode_request` decodes an inflated request with the grpclib Stream's
  `_codec` and `_recv_type`; `send_encoded` sends the response headers with `grpc-encoding`
  (grpclib drops `grpc-*` metadata) through the stream's `_stream.send_headers`/`send_data`,
  and keeps the grpclib Stream's `_send_initial_metadata_done`, `_send_message_done` and
  `_messages_sent`.
- The client (`GracefulChannel`): `Channel._create_connection` makes each connection; its h2
  connection's `_receive_goaway_frame` is overridden so a GOAWAY(NO_ERROR) lets the running
  calls finish.

`missing_internals()` lists what an upgrade removed; a unit test fails on it with the list.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import socket
import struct
import time
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, cast

from grpclib import client as _client
from grpclib import protocol as _protocol
from grpclib import server as _server
from grpclib._typing import IServable
from grpclib.config import Configuration
from grpclib.const import Cardinality, Handler
from grpclib.exceptions import GRPCError
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import StreamReset
from h2.exceptions import TooManyStreamsError
from h2.frame_buffer import CONTINUATION_BACKLOG, FrameBuffer
from h2.settings import SettingCodes
from h2.stream import StreamClosedBy
from hyperframe.frame import GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame

from blazerpc.config import ServerConfig
from blazerpc.errors import LimitError, to_status

log = logging.getLogger(__name__)

__all__ = (
    "GRPCLIB_RANGE",
    "H2_RANGE",
    "EdgeOptions",
    "GracefulChannel",
    "GrpcServer",
    "IServable",
    "ReadStalled",
    "RequestReader",
    "decode_request",
    "missing_internals",
    "request_reader",
    "send_encoded",
)

GRPCLIB_RANGE = ">=0.4.9,<0.5"
"""The grpclib releases this module was written and tested for."""
H2_RANGE = ">=4.2,<5"
"""The h2 releases the HTTP/2 overrides were written and tested for."""


class ReadStalled(Exception):
    """A started message stopped arriving: `got` of the bytes asked for came, then nothing."""

    def __init__(self, got: int) -> None:
        super().__init__(got)
        self.got = got


class RequestReader:
    """The HTTP/2 stream under a gRPC call, read by size, taken once per call.

    `read(size)` returns up to `size` bytes of the request: fewer when the caller ended its
    side, b"" when it sent nothing more. grpclib's `Buffer.read` asserts when the caller ends
    its side with fewer bytes than asked (a message cut short): the reader returns the bytes
    there are instead, so the caller of the reader can say what was wrong (INVALID_ARGUMENT).

    A read that waits inside a message (`in_message`, or some of its bytes read) is watched by
    the connection's timer (`_EdgeProtocol._check_reads`): `message_timeout` seconds with no
    byte arriving fail the wait with ReadStalled. A wait between messages is not a stall: only
    the call's deadline bounds it. Reads pay nothing for the watch.
    """

    __slots__ = ("_buffer", "_h2_stream")

    def __init__(self, stream: _server.Stream[Any, Any]) -> None:
        self._h2_stream = stream._stream
        self._buffer = self._h2_stream.buffer

    @property
    def in_message(self) -> bool:
        """A wait now is inside a message (or for a message due now): a stall, not a gap."""
        return getattr(self._h2_stream, "in_message", False)

    @in_message.setter
    def in_message(self, value: bool) -> None:
        self._h2_stream.in_message = value  # type: ignore[attr-defined]

    async def read(self, size: int) -> bytes:
        """Up to `size` bytes; see the class."""
        try:
            data: bytes = await self._h2_stream.recv_data(size)
        except AssertionError:  # "Received less data than expected": the rest is buffered
            data = await self._buffer.read(self._buffer._acked_size)
        return data

    def header(self, name: str) -> str | None:
        """A request header grpclib keeps out of the metadata (`grpc-encoding`, ...)."""
        for key, value in getattr(self._h2_stream, "request_headers", ()):
            if key == name:
                return str(value)
        return None


def request_reader(stream: _server.Stream[Any, Any]) -> RequestReader:
    """The call's RequestReader."""
    return RequestReader(stream)


async def send_encoded(
    stream: _server.Stream[Any, Any], data: bytes, encoding: str, *, is_compressed: bool
) -> None:
    """Send a response message of a call whose responses use `encoding`, flagged compressed
    or not; the call's first one sends the response headers with `grpc-encoding`, which
    grpclib refuses to set from metadata."""
    if not stream._send_initial_metadata_done:
        await stream._stream.send_headers(
            [
                (":status", "200"),
                ("content-type", stream._content_type),
                ("grpc-encoding", encoding),
            ]
        )
        stream._send_initial_metadata_done = True
    await stream._stream.send_data(_ENCODED_PREFIX.pack(is_compressed, len(data)) + data)
    stream._send_message_done = True
    stream._messages_sent += 1


_ENCODED_PREFIX = struct.Struct(">?I")


def decode_request(stream: _server.Stream[Any, Any], data: bytes) -> Any:
    """A request message's bytes as the handler's request type, by the server's codec."""
    return stream._codec.decode(data, stream._recv_type)


OVERSIZED_PATH = "/blazerpc.edge.Refused/OversizedMetadata"
"""Where a call whose metadata is over the limit is sent instead of its own method."""
OVER_MAX_CALLS_PATH = "/blazerpc.edge.Refused/OverMaxCalls"
"""Where a call past `max_calls` is sent instead of its own method."""
_OVERSIZED_SIZE = "x-blazerpc-metadata-bytes"
_MAX_CALLS = "x-blazerpc-max-calls"
RESETS_PER_SECOND = 200
"""Stream resets a client may send on one connection in a second. A client that cancels
calls resets them, but not hundreds a second on one connection; an attacker opening and
resetting streams (HTTP/2 Rapid Reset, CVE-2023-44487) makes the server start work it never
finishes. Past the budget: GOAWAY(ENHANCE_YOUR_CALM), and the connection closes."""
_LINGER_S = 1.0
"""How long a connection told GOAWAY still reads (and drops) what its client sends: closed at
once, the socket would answer those bytes with a TCP reset, which can destroy the GOAWAY
before the client reads it."""
_DRAIN_PING = b"blzdrain"
_DRAIN_PING_WAIT_S = 1.0
"""A GOAWAY for a connection's age comes in two steps (as grpc-core does): the first says no
new calls, a PING follows; its answer (or this long) means the client has seen it, and the
second GOAWAY names the last call served. A call the client sent before it saw the first is
served, not lost."""
_GOAWAY_TICK_S = 0.05
_MAX_STREAM_ID = 2**31 - 1
_OPEN_WINDOW = 65_535
"""A connection receive window below this may be what keeps a client from sending."""
HEADER_LIST_HARD_CAP = 1024 * 1024
"""Header blocks up to this size are decoded whole, so HPACK stays in step and a call over
`max_header_bytes` fails alone; past it, the connection is closed (RFC 9113 allows no less)."""


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    """The HTTP/2 edge's limits in size and time (ServerConfig's, in seconds; 0 is off)."""

    max_header_bytes: int = 64 * 1024
    max_connection_streams: int = 100
    max_calls: int = 4096
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    message_timeout: float = 30.0
    idle_timeout: float = 300.0
    keepalive_interval: float = 60.0
    keepalive_timeout: float = 20.0
    max_connection_age: float = 0.0
    max_connection_age_grace: float | None = None

    @classmethod
    def of(cls, config: ServerConfig) -> EdgeOptions:
        """The options of a server's configuration."""
        return cls(**{name: getattr(config, name) for name in cls.__slots__})

    @property
    def tick(self) -> float:
        """How often a connection checks its timers: a quarter of the shortest, 50 ms to 5 s."""
        limits = [
            limit
            for limit in (
                self.handshake_timeout,
                self.header_timeout,
                self.message_timeout,
                self.idle_timeout,
                self.max_connection_age,
                self.max_connection_age_grace,
            )
            if limit
        ]
        return min(5.0, max(0.05, min(limits, default=20.0) / 4))

    def grpclib_configuration(self) -> Configuration:
        """grpclib's keepalive: a PING every interval, idle or not; no answer closes."""
        interval = self.keepalive_interval or None
        return Configuration(
            _keepalive_time=interval,
            _keepalive_timeout=self.keepalive_timeout,
            _keepalive_permit_without_calls=True,
            _http2_max_pings_without_data=0,
            _http2_min_sent_ping_interval_without_data=(interval or 1.0) / 2,
        )


class GrpcServer(_server.Server):
    """grpclib's Server, able to stop listening and to close its connections, and with a
    hardened HTTP/2 edge (`EdgeOptions`): per-connection stream limit set explicitly, excess
    streams refused one by one with REFUSED_STREAM; calls over `max_header_bytes` of metadata
    or past `max_calls` held failed alone with RESOURCE_EXHAUSTED; connections closed when
    their handshake, a header block or idleness outlasts its timeout; GOAWAY at a maximum
    age, the running calls let finish; keepalive PINGs.

    grpclib's own close() stops listening but leaves the open connections running.
    """

    def __init__(
        self,
        services: Any,
        *args: Any,
        options: EdgeOptions | None = None,
        uncounted_paths: Collection[str] = (),
        **kwargs: Any,
    ) -> None:
        self.options = options = options or EdgeOptions()
        kwargs.setdefault("config", options.grpclib_configuration())
        super().__init__([*services, _Refused()], *args, **kwargs)
        self._protocols: weakref.WeakSet[_protocol.H2Protocol] = weakref.WeakSet()
        self._uncounted_paths = frozenset(uncounted_paths)
        self._draining = False
        self.held_calls = 0
        """gRPC calls whose headers came and whose handler has not finished, all connections."""

    async def start(self, *, sock: Any, ssl: Any = None) -> None:  # type: ignore[override]
        """Serve on a bound socket; a TLS handshake gets `handshake_timeout` seconds."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        handshake = self.options.handshake_timeout or None
        self._ssl = ssl
        self._server = await self._loop.create_server(
            self._protocol_factory,
            sock=sock,
            ssl=ssl,
            ssl_handshake_timeout=handshake if ssl is not None else None,
        )
        self._server_closed_fut = self._loop.create_future()

    def _protocol_factory(self) -> _protocol.H2Protocol:
        protocol = super()._protocol_factory()
        protocol.__class__ = _EdgeProtocol  # grpclib makes it; we add to connection_made
        edge: _EdgeProtocol = protocol  # type: ignore[assignment]
        edge.options = self.options
        edge.server_draining = lambda: self._draining
        accept = protocol.handler.accept
        handler: Any = protocol.handler
        limit = self.options.max_header_bytes
        max_calls = self.options.max_calls
        uncounted = self._uncounted_paths

        def accept_within_limits(stream: Any, headers: Any, release_stream: Any) -> None:
            size = sum(len(name) + len(value) + 32 for name, value in headers)  # RFC 9113 6.5.2
            if size > limit:  # the call goes to a handler that refuses it, and only it
                headers = _rerouted(headers, OVERSIZED_PATH, (_OVERSIZED_SIZE, str(size)))
            elif self.held_calls >= max_calls and _path(headers) not in uncounted:
                headers = _rerouted(headers, OVER_MAX_CALLS_PATH, (_MAX_CALLS, str(max_calls)))
            stream.request_headers = headers  # compression reads grpc-encoding from them
            self.held_calls += 1
            if edge.keeps_calls_on_goaway is None:  # one client per connection: ask once
                edge.keeps_calls_on_goaway = not _ends_calls_on_goaway(headers)

            def release() -> None:
                self.held_calls -= 1
                del releases[stream]
                release_stream()

            releases[stream] = release  # not on the stream: that would make a reference cycle
            accept(stream, headers, release)

        cancel, close = handler.cancel, handler.close
        releases: dict[Any, Callable[[], None]] = {}

        def cancel_releasing(stream: Any) -> None:
            task = handler._tasks.get(stream)
            cancel(stream)
            _release_if_never_started(task, releases.get(stream))

        def close_releasing() -> None:
            started = list(handler._tasks.items())  # (a dict grpclib remakes now and then)
            close()
            for stream, task in started:
                _release_if_never_started(task, releases.get(stream))

        handler.cancel, handler.close = cancel_releasing, close_releasing
        protocol.handler.accept = accept_within_limits  # type: ignore[method-assign]
        self._protocols.add(protocol)
        return protocol

    def stop_listening(self) -> None:
        """Accept no new connections; the open ones carry on.

        Connections the kernel has already completed but nobody accepted yet are accepted and
        served first (told GOAWAY if the server drains): closed with the listening socket,
        they would be reset, and with SO_REUSEPORT another server could have taken them.
        """
        if self._server is None:
            return
        pending: list[socket.socket] = []
        listeners = cast(asyncio.Server, self._server).sockets  # grpclib types it abstractly
        for listener in listeners:
            with socket.fromfd(listener.fileno(), listener.family, listener.type) as duplicate:
                duplicate.setblocking(False)
                while True:
                    try:
                        connection, _ = duplicate.accept()
                    except OSError:  # BlockingIOError: none left
                        break
                    pending.append(connection)
        self._server.close()
        handshake = self.options.handshake_timeout or None
        for connection in pending:
            connection.setblocking(False)
            asyncio.ensure_future(
                self._loop.connect_accepted_socket(
                    self._protocol_factory,
                    connection,
                    ssl=self._ssl,
                    ssl_handshake_timeout=handshake if self._ssl is not None else None,
                )
            )

    def has_handed_over(self) -> bool:
        """Every connection told GOAWAY has finished its calls and is closing (a drain's
        handover is over: no call can arrive any more)."""
        return all(
            not isinstance(protocol, _EdgeProtocol) or protocol.has_handed_over
            for protocol in list(self._protocols)
        )

    def go_away(self) -> None:
        """Tell every client connection to take new calls elsewhere (a drain): GOAWAY in two
        steps, as at a maximum age. Calls sent before the client saw it are served; later ones
        are refused unprocessed (REFUSED_STREAM), which clients retry on a new connection;
        each connection closes once its calls are done."""
        self._draining = True
        for protocol in list(self._protocols):
            if isinstance(protocol, _EdgeProtocol):
                protocol.go_away("the server is draining")

    def close_connections(self) -> None:
        """Close every client connection still open."""
        for protocol in list(self._protocols):
            processor = getattr(protocol, "processor", None)
            if processor is not None:
                processor.close("the server closed")


def _release_if_never_started(
    task: asyncio.Task[None] | None, release: Callable[[], None] | None
) -> None:
    """grpclib releases a call's stream in its handler's `finally`, which a task cancelled
    before its first step (HEADERS and RST_STREAM in one read) never runs: release it here."""
    coroutine: Any = task.get_coro() if task is not None else None
    if release is not None and inspect.getcoroutinestate(coroutine) == "CORO_CREATED":
        release()


_GRACEFUL_HEADER = "x-blazerpc-goaway"
"""Sent by GracefulChannel: the client keeps its running calls when told GOAWAY."""


def _ends_calls_on_goaway(headers: Any) -> bool:
    """A plain grpclib client, which ends every running call at any GOAWAY (GracefulChannel
    says it does not; grpc-core, grpc-go, grpc-java and the rest do not either)."""
    agent = ""
    for name, value in headers:
        if name == _GRACEFUL_HEADER:
            return False
        if name == "user-agent":
            agent = str(value)
    return agent.startswith("grpc-python-grpclib")


def _path(headers: Any) -> str:
    for name, value in headers:
        if name == ":path":
            return str(value)
    return ""


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
        "h2.frame_buffer.FrameBuffer._data": hasattr(FrameBuffer(), "_data")
        or hasattr(FrameBuffer(), "data"),
        "grpclib.protocol.Stream.data_received": "stream.data_received +="
        in inspect.getsource(_protocol.EventsProcessor.process_data_received),
        "grpclib.protocol.Buffer._unacked": "self._unacked"
        in inspect.getsource(_protocol.Buffer.__init__),
        "asyncio.Queue._getters": hasattr(asyncio.Queue(), "_getters"),
        "grpclib.server.Handler._tasks": "self._tasks[stream] ="
        in inspect.getsource(_server.Handler.accept),
        "h2.connection.H2Connection.incoming_buffer": isinstance(
            getattr(h2_connection, "incoming_buffer", None), FrameBuffer
        ),
        "h2.connection.H2Connection._receive_rst_stream_frame": callable(
            getattr(H2Connection, "_receive_rst_stream_frame", None)
        ),
        "h2.connection.H2Connection._stream_closed_by": callable(
            getattr(H2Connection, "_stream_closed_by", None)
        ),
        "h2.connection.H2Connection._receive_settings_frame": callable(
            getattr(H2Connection, "_receive_settings_frame", None)
        ),
        "h2.connection.H2Connection._receive_ping_frame": callable(
            getattr(H2Connection, "_receive_ping_frame", None)
        ),
        "h2.connection.H2Connection._receive_goaway_frame": callable(
            getattr(H2Connection, "_receive_goaway_frame", None)
        ),
        "grpclib.server.Server._server_closed_fut": "self._server_closed_fut"
        in inspect.getsource(_server.Server.start),
        "grpclib.protocol.Connection._transport": "self._transport = transport"
        in inspect.getsource(_protocol.Connection.__init__),
        "grpclib.config.Configuration._keepalive_time": "_keepalive_time"
        in Configuration.__dataclass_fields__,
        "grpclib.server.Stream._send_initial_metadata_done": hasattr(
            _server.Stream, "_send_initial_metadata_done"
        ),
        "grpclib.server.Stream._send_message_done": hasattr(_server.Stream, "_send_message_done"),
        "grpclib.server.Stream._messages_sent": hasattr(_server.Stream, "_messages_sent"),
        "grpclib.server.Stream._content_type": hasattr(_server.Stream, "_content_type"),
        "grpclib.server.Stream._codec": "self._codec = codec"
        in inspect.getsource(_server.Stream.__init__),
        "grpclib.server.Stream._recv_type": "self._recv_type = recv_type"
        in inspect.getsource(_server.Stream.__init__),
        "grpclib.client.Channel._create_connection": callable(
            getattr(_client.Channel, "_create_connection", None)
        ),
    }
    return [name for name, is_present in wanted.items() if not is_present]


_KEPT = {"content-type", "te", "grpc-timeout"}


def _rerouted(headers: Any, path: str, why: tuple[str, str]) -> list[tuple[str, str]]:
    """A call's headers sent to `path` (a refusing handler), with only what gRPC needs kept
    and `why` added for that handler to word its refusal."""
    kept = [(n, v) for n, v in headers if n.startswith(":") or n in _KEPT]
    return [*((n, path if n == ":path" else v) for n, v in kept), why]


class _Refused:
    """The handler of calls refused at the edge, alone: RESOURCE_EXHAUSTED, saying why."""

    def __init__(self) -> None:
        self._mapping = {
            OVERSIZED_PATH: Handler(self._oversized, Cardinality.STREAM_STREAM, bytes, bytes),
            OVER_MAX_CALLS_PATH: Handler(self._over_max, Cardinality.STREAM_STREAM, bytes, bytes),
        }

    def __mapping__(self) -> dict[str, Any]:
        return self._mapping

    async def _oversized(self, stream: Any) -> None:
        size = (stream.metadata or {}).get(_OVERSIZED_SIZE, "?")
        error = LimitError(
            f"the call's metadata is {size} bytes, over the server's limit (max_header_bytes); "
            "send less metadata."
        )
        raise GRPCError(*to_status(error, "", service="metadata limit"))

    async def _over_max(self, stream: Any) -> None:
        limit = (stream.metadata or {}).get(_MAX_CALLS, "?")
        error = LimitError(
            f"the server holds {limit} calls, its limit (max_calls); try again shortly."
        )
        raise GRPCError(*to_status(error, "", service="call limit"))


class _EdgeProtocol(_protocol.H2Protocol):
    """grpclib's protocol, whose HTTP/2 connection refuses excess streams one by one, says
    GOAWAY(ENHANCE_YOUR_CALM) to a client that resets streams faster than the budget, and
    watches its timers (`_check`, every `EdgeOptions.tick` seconds)."""

    options = EdgeOptions()

    _is_closing = False
    _is_made = False
    _watch: asyncio.TimerHandle | None = None
    _goaway_at: float | None = None
    _goaway_reason = ""
    _goaway_pending = ""
    """A GOAWAY waiting for the connection's calls to end (its client would lose them)."""
    keeps_calls_on_goaway: bool | None = None
    """Whether the connection's client keeps its running calls at a GOAWAY, as its first
    call's headers say (None: no call yet, so no call to lose)."""
    server_draining: Callable[[], bool] = staticmethod(lambda: False)
    """Whether the server's drain began (a connection whose TLS handshake ends later is told
    GOAWAY as soon as it is made)."""

    def data_received(self, data: bytes) -> None:
        if self._is_closing:
            return  # lingering after GOAWAY: what the client still sends is read and dropped
        try:
            super().data_received(data)
        except _OverBudget as budget:
            h2_conn = self.connection._connection
            h2_conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            self.connection.flush()
            self._close_soon(str(budget), level=logging.WARNING)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        h2_conn = self.connection._connection
        h2_conn.__class__ = _EdgeH2Connection  # same state, some methods changed
        table = h2_conn._frame_dispatch_table  # bound methods of the old class: rebind ours
        table[HeadersFrame] = h2_conn._receive_headers_frame
        table[RstStreamFrame] = h2_conn._receive_rst_stream_frame
        table[SettingsFrame] = h2_conn._receive_settings_frame
        table[PingFrame] = h2_conn._receive_ping_frame
        h2_conn.incoming_buffer.__class__ = _EdgeFrameBuffer
        h2_conn.decoder.max_header_list_size = HEADER_LIST_HARD_CAP
        h2_conn.update_settings(
            {
                SettingCodes.MAX_CONCURRENT_STREAMS: self.options.max_connection_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.options.max_header_bytes,
            }
        )
        self.connection.flush()
        loop = asyncio.get_running_loop()
        now = loop.time()
        age = self.options.max_connection_age
        self._made_at = now
        self._age_limit = age * random.uniform(0.9, 1.1) if age else None  # gRFC A9's jitter
        self._idle_since = now
        self._streams_seen = 0
        self._pending_block: tuple[object, float] | None = None
        self._is_made = True
        self._watch = loop.call_later(self.options.tick, self._check)
        if self.server_draining():
            self.go_away("the server is draining")

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
        super().connection_lost(exc)

    def _check(self) -> None:
        """The connection's timers: handshake, header block, stalled reads, idleness, age."""
        if self._is_closing or self.connection.is_closing():
            return
        options, now = self.options, asyncio.get_running_loop().time()
        h2_conn: _EdgeH2Connection = self.connection._connection  # type: ignore[assignment]
        has_calls = bool(self.processor.streams)
        handshake = options.handshake_timeout
        if handshake and not h2_conn.has_preface and now - self._made_at >= handshake:
            self._close_soon(f"no HTTP/2 preface in {handshake} s", linger=False)
            return
        block = _pending_header_block(h2_conn)
        if block is None:
            self._pending_block = None
        elif self._pending_block is None or self._pending_block[0] != block:
            self._pending_block = (block, now)
        elif options.header_timeout and now - self._pending_block[1] >= options.header_timeout:
            self._say_goaway(h2_conn, final=True, error=ErrorCodes.PROTOCOL_ERROR)
            self._close_soon(f"a header block unfinished after {options.header_timeout} s")
            return
        if has_calls and options.message_timeout:
            self._check_reads(h2_conn, now)
        if has_calls or h2_conn.highest_inbound_stream_id != self._streams_seen:
            self._idle_since, self._streams_seen = now, h2_conn.highest_inbound_stream_id
        elif options.idle_timeout and now - self._idle_since >= options.idle_timeout:
            self._say_goaway(h2_conn, final=True)
            self._close_soon(f"idle for {options.idle_timeout} s", level=logging.DEBUG)
            return
        if self._goaway_at is None:
            if self._goaway_pending and not has_calls:
                self.go_away(self._goaway_pending)
            elif self._age_limit is not None and now - self._made_at >= self._age_limit:
                self.go_away("it reached its maximum age")
        else:
            if h2_conn.drain_acked or now - self._goaway_at >= _DRAIN_PING_WAIT_S:
                if h2_conn.refuses_after is None:
                    self._say_goaway(h2_conn, final=True)
            grace = options.max_connection_age_grace
            if h2_conn.refuses_after is not None and not has_calls:
                self._close_soon(self._goaway_reason, level=logging.DEBUG)
                return
            if grace is not None and now - self._goaway_at >= grace:
                self._close_soon("its calls outlasted max_connection_age_grace")
                return
        self._schedule_check()

    def _schedule_check(self) -> None:
        """The next tick; every 50 ms while a GOAWAY is under way, so a handover is quick."""
        if self._watch is not None:
            self._watch.cancel()
        is_going = self._goaway_at is not None or bool(self._goaway_pending)
        interval = min(_GOAWAY_TICK_S, self.options.tick) if is_going else self.options.tick
        self._watch = asyncio.get_running_loop().call_later(interval, self._check)

    @property
    def has_handed_over(self) -> bool:
        """Closing, or never made (a TLS handshake under way has no calls to hand over)."""
        return not self._is_made or self._is_closing or self.connection.is_closing()

    def go_away(self, reason: str) -> None:
        """The first GOAWAY: no new calls, those in flight still come (then _check goes on).

        A client that would end its running calls at a GOAWAY (plain grpclib) is told once
        they are done; until then its new calls are served.
        """
        if not self._is_made or self._goaway_at is not None or self._is_closing:
            return
        if self.connection.is_closing():
            return
        if self.keeps_calls_on_goaway is False and self.processor.streams:
            self._goaway_pending = reason
            self._schedule_check()
            return
        h2_conn: _EdgeH2Connection = self.connection._connection  # type: ignore[assignment]
        self._goaway_at = asyncio.get_running_loop().time()
        self._goaway_reason = reason
        self._say_goaway(h2_conn, final=False)
        h2_conn.ping(_DRAIN_PING)
        self.connection.flush()
        self._schedule_check()

    def _check_reads(self, h2_conn: _EdgeH2Connection, now: float) -> None:
        """Fail with ReadStalled the reads that wait inside a message with no byte arriving
        for message_timeout. A read waits when grpclib's buffer has a getter; time when the
        server's own connection window is too small for the client to send (another call has
        not read its data yet) is not the client's stall, and does not count."""
        is_window_open = h2_conn.inbound_flow_control_window >= _OPEN_WINDOW
        streams: dict[int, Any] = self.processor.streams
        for stream in streams.values():
            buffer = stream.buffer
            waiting = buffer._unacked._getters
            received = stream.data_received
            is_inside = getattr(stream, "in_message", False) or buffer._acked_size > 0
            quiet: tuple[int, float] | None = getattr(stream, "quiet", None)
            if not waiting or not is_inside or not is_window_open:
                stream.quiet = None
            elif quiet is None or quiet[0] != received:
                stream.quiet = (received, now)
            elif now - quiet[1] >= self.options.message_timeout:
                stream.quiet = None
                for getter in waiting:
                    if not getter.done():
                        getter.set_exception(ReadStalled(buffer._acked_size))

    def _say_goaway(
        self, h2_conn: _EdgeH2Connection, *, final: bool, error: ErrorCodes = ErrorCodes.NO_ERROR
    ) -> None:
        """GOAWAY, written past h2's state machine (which would refuse to send anything more,
        even on the calls still running). Final: streams after the last one opened are refused."""
        last = h2_conn.highest_inbound_stream_id if final else _MAX_STREAM_ID
        if h2_conn.refuses_after is not None:
            last = min(last, h2_conn.refuses_after)  # a later GOAWAY never raises it (RFC 9113)
        if final:
            h2_conn.refuses_after = last
        self.connection.flush()  # what h2 has queued goes first
        frame = GoAwayFrame(stream_id=0, last_stream_id=last, error_code=error)
        self.connection._transport.write(frame.serialize())

    def _close_soon(self, reason: str, *, level: int = logging.INFO, linger: bool = True) -> None:
        """Stop the connection's calls, read and drop for a moment (see _LINGER_S) when a
        GOAWAY went out, then close."""
        peer = self.connection.get_peer().addr()
        log.log(level, "closed a connection from %s: %s", peer, reason)
        self._is_closing = True
        self.handler.close()  # its calls end now; the socket closes after a moment
        if linger:
            asyncio.get_running_loop().call_later(_LINGER_S, self.processor.close, reason)
        else:
            self.processor.close(reason)


def _pending_header_block(h2_conn: H2Connection) -> object | None:
    """What marks a header block still arriving: its first frame, when CONTINUATION frames are
    awaited, or the 9-byte head of a HEADERS or CONTINUATION frame itself still arriving."""
    buffer = h2_conn.incoming_buffer
    if buffer._headers_buffer:
        return buffer._headers_buffer[0]
    partial = cast(
        bytes, getattr(buffer, "_data", None) or getattr(buffer, "data", b"")
    )  # 4.4, 4.2
    if len(partial) >= 4 and partial[3] in (_HEADERS_TYPE, _CONTINUATION_TYPE):
        return bytes(partial[:9])
    return None


_HEADERS_TYPE, _CONTINUATION_TYPE = 0x1, 0x9


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
    """h2's connection: a stream past the limit, or opened after a final GOAWAY, is refused
    alone, its headers still decoded; resets are counted against a budget per second; the
    preface (the client's first SETTINGS) and the answer to the drain PING are noted."""

    _resets = 0
    _resets_since = 0.0
    has_preface = False
    drain_acked = False
    refuses_after: int | None = None
    """The last stream id of a final GOAWAY: later streams are refused."""

    def _receive_settings_frame(self, frame: Any) -> Any:
        self.has_preface = True
        return super()._receive_settings_frame(frame)

    def _receive_ping_frame(self, frame: Any) -> Any:
        if "ACK" in frame.flags and frame.opaque_data == _DRAIN_PING:
            self.drain_acked = True
        return super()._receive_ping_frame(frame)

    def _receive_rst_stream_frame(self, frame: Any) -> Any:
        now = time.monotonic()
        if now - self._resets_since > 1.0:
            self._resets, self._resets_since = 0, now
        self._resets += 1
        if self._resets > RESETS_PER_SECOND:
            raise _OverBudget(f"over {RESETS_PER_SECOND} stream resets a second (Rapid Reset?)")
        return super()._receive_rst_stream_frame(frame)

    def _receive_headers_frame(self, frame: Any) -> Any:
        if self.refuses_after is not None and frame.stream_id > self.refuses_after:
            if frame.stream_id not in self.streams:
                return self._refuse(frame)
        try:  # h2 counts the open streams itself (a walk of them all): not twice
            return super()._receive_headers_frame(frame)
        except TooManyStreamsError:  # raised before h2 decoded the block: decode it now
            return self._refuse(frame)

    def _refuse(self, frame: Any) -> Any:
        """REFUSED_STREAM for a new stream (safe for the client to retry), its headers decoded
        so HPACK stays in step with the client."""
        self.decoder.decode(frame.data)
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


class GracefulChannel(_client.Channel):
    """grpclib's client Channel, which takes a server's GOAWAY(NO_ERROR) as gRPC means it: no
    new calls on that connection (the next call opens a new one), and the calls running on it
    finish there. grpclib and h2 would end them all at once, and those calls would fail.

    A connection told GOAWAY is closed when the server closes it, or with the channel.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._going_away: weakref.WeakSet[_protocol.H2Protocol] = weakref.WeakSet()
        self.on_going_away: Callable[[], None] | None = None
        """Called when the server says GOAWAY (it drains, or reloads): a balancing client
        sends its next calls elsewhere for a while."""

    async def _create_connection(self) -> _protocol.H2Protocol:
        protocol = await super()._create_connection()
        h2_conn = protocol.connection._connection
        if not hasattr(h2_conn, "_frame_dispatch_table"):  # seen once, as a worker died
            return protocol  # a connection that is already gone: nothing to keep graceful
        h2_conn.__class__ = _GracefulClientH2Connection
        graceful: _GracefulClientH2Connection = h2_conn  # type: ignore[assignment]
        graceful._frame_dispatch_table[GoAwayFrame] = graceful._receive_goaway_frame

        def going_away() -> None:
            protocol.handler.close()  # connection_lost: the channel connects anew for new calls
            self._going_away.add(protocol)
            if self.on_going_away is not None:
                self.on_going_away()

        graceful.going_away = going_away
        return protocol

    def request(self, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        """grpclib's request, marked so the server knows this client keeps running calls at
        a GOAWAY (a plain grpclib client does not, and is told only once its calls end)."""
        pairs = list(metadata.items() if hasattr(metadata, "items") else metadata or ())
        return super().request(*args, metadata=[*pairs, (_GRACEFUL_HEADER, "1")], **kwargs)

    @property
    def has_calls(self) -> bool:
        """Whether a call still runs on one of its connections."""
        protocols = [self._protocol, *self._going_away]
        return any(p is not None and p.processor.streams for p in protocols)

    def close(self) -> None:
        """Close the connection, and any told GOAWAY whose calls still run."""
        for protocol in list(self._going_away):
            protocol.processor.close()
        super().close()


class _GracefulClientH2Connection(H2Connection):
    """h2's client connection: a GOAWAY(NO_ERROR) leaves the connection open for the calls
    already sent, instead of closing it to all sending (h2 moves to CLOSED at any GOAWAY)."""

    going_away: Callable[[], None] | None = None

    def _receive_goaway_frame(self, frame: Any) -> Any:
        if frame.error_code != ErrorCodes.NO_ERROR or self.going_away is None:
            return super()._receive_goaway_frame(frame)
        self.going_away()
        unserved = [stream_id for stream_id in self.streams if stream_id > frame.last_stream_id]
        for stream_id in unserved:  # never processed by the server: refused, safe to retry
            del self.streams[stream_id]
            self._closed_streams[stream_id] = StreamClosedBy.RECV_RST_STREAM
        return [], [_refused(stream_id) for stream_id in unserved]


def _refused(stream_id: int) -> Any:
    """h2's StreamReset event for a stream the server refused (REFUSED_STREAM)."""
    try:
        event: Any = StreamReset(stream_id=stream_id)  # type: ignore[call-arg,unused-ignore]
    except TypeError:  # h2 4.2: no arguments
        event = StreamReset()  # type: ignore[call-arg,unused-ignore]
        event.stream_id = stream_id
    event.error_code = ErrorCodes.REFUSED_STREAM
    event.remote_reset = True
    return event
