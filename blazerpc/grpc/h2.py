"""The one door to grpclib's private names: every other module uses only its public API.

Written for grpclib 0.4.9 (pyproject.toml pins `grpclib>=0.4.9,<0.5`). What it relies on:

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

`missing_internals()` lists what an upgrade removed; a unit test fails on it with the list.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from grpclib import protocol as _protocol
from grpclib import server as _server
from grpclib._typing import IServable

__all__ = (
    "GRPCLIB_RANGE",
    "GrpcServer",
    "IServable",
    "RequestReader",
    "missing_internals",
    "request_reader",
)

GRPCLIB_RANGE = ">=0.4.9,<0.5"
"""The grpclib releases this module was written and tested for."""


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


class GrpcServer(_server.Server):
    """grpclib's Server, able to stop listening and to close its connections.

    grpclib's own close() stops listening but leaves the open connections running.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._protocols: weakref.WeakSet[_protocol.H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> _protocol.H2Protocol:
        protocol = super()._protocol_factory()
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
    return [name for name, is_present in wanted.items() if not is_present]
