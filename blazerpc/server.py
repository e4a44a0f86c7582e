"""BlazeServer: a grpclib server for one app, on a socket it binds itself (so `.port` is real)."""

from __future__ import annotations

import socket
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from grpclib.protocol import H2Protocol
from grpclib.server import Server

from blazerpc.app import BlazeApp
from blazerpc.batcher import BatchStats
from blazerpc.codec import RawBytesCodec, SchemaCodec
from blazerpc.handlers import ServiceHandlers

__all__ = ("BlazeServer",)


class BlazeServer:
    """Serves an app's models over gRPC: `async with BlazeServer(app, port=0) as server: ...`.

    The wire classes are built once, here, from the app's schema.
    """

    def __init__(self, app: BlazeApp, *, host: str = "127.0.0.1", port: int = 50051) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self._handlers = ServiceHandlers(app.schema, SchemaCodec(app.schema))
        self._server: _Server | None = None
        self._socket: socket.socket | None = None

    @property
    def batch_stats(self) -> Mapping[str, BatchStats]:
        """Per batched model: batches run, items, queue depth, sizes, queue time."""
        return {name: batcher.stats for name, batcher in self._handlers.batchers.items()}

    @property
    def port(self) -> int:
        """The bound port: the real one when the server was created with port 0."""
        if self._socket is None:
            raise RuntimeError("BlazeServer.port is known once start() has run.")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting calls."""
        # grpclib's Server binds to the running loop when created, so create it here
        self._server = _Server([self._handlers], codec=RawBytesCodec())
        self._socket = _bind(self.host, self._requested_port)
        await self._server.start(sock=self._socket)

    async def serve(self) -> None:
        """Start if needed, then serve until close() is called."""
        if self._server is None:
            await self.start()
        if self._server is not None:
            await self._server.wait_closed()

    async def close(self) -> None:
        """Stop accepting calls and end the open ones."""
        if self._server is not None:
            self._server.close()
            self._server.close_connections()  # before waiting: Python 3.12+ waits for them
            await self._server.wait_closed()
        await self._handlers.close()

    async def __aenter__(self) -> BlazeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class _Server(Server):
    """grpclib's Server, able to close its connections: its own close() leaves them open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        self._protocols.add(protocol)
        return protocol

    def close_connections(self) -> None:
        """Close every client connection still open."""
        for protocol in list(self._protocols):
            processor = getattr(protocol, "processor", None)
            if processor is not None:
                processor.close("the server closed")


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; proto IPPROTO_TCP so asyncio sets TCP_NODELAY on connections.

    Without it every small response waits ~40 ms for Nagle's algorithm and delayed ACKs.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock
