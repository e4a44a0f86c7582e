"""The benchmark's servers, one per process: `python -m bench.servers KIND PORT`.

- blazerpc: bench/apps.py served by BlazeServer (no logging configured: the access log is off).
- blazerpc+log: the same, logging as `blaze serve` configures it (the access log on, INFO), its
  lines written to a temporary file rather than the terminal.
- grpclib: a hand-written grpclib servicer using the same upb message classes (the ceiling for
  a grpclib framework).
- grpcio: a grpcio aio servicer with the same messages, for reference.
- blazerpc+tls, blazerpc+tls+key, blazerpc+middleware: bench/security.py's (TLS; TLS and an
  API key; one middleware that does nothing).
- blazerpc+no-timers: blazerpc with every time limit and keepalive off, for the cost of the
  edge's timers (`bench/compare.py --kind`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

from bench.apps import app
from blazerpc.wire.protobuf import SchemaCodec

SERVICE = "/blazerpc.InferenceService"
CLASSES = SchemaCodec(app.schema).classes
EchoRequest, EchoResponse = CLASSES["EchoRequest"], CLASSES["EchoResponse"]
TokensRequest, TokensResponse = CLASSES["TokensRequest"], CLASSES["TokensResponse"]


async def serve_blazerpc(port: int, **options: Any) -> None:
    from blazerpc import BlazeServer

    async with BlazeServer(app, port=port, **options) as server:
        print(f"ready {server.port}", flush=True)
        await asyncio.Event().wait()


def secured(kind: str) -> dict[str, Any]:
    """The options of bench/security.py's servers; PEM and key files are in BLAZE_BENCH_PEMS."""
    import os

    pems = os.environ.get("BLAZE_BENCH_PEMS", "")
    options: dict[str, Any] = {}
    if "+tls" in kind:
        options |= {"tls_cert": f"{pems}/cert.pem", "tls_key": f"{pems}/key.pem"}
    if "+key" in kind:
        options["api_key_file"] = f"{pems}/keys"
    return options


def with_middleware() -> None:
    """One middleware that does nothing: the cost of the hook itself."""
    from blazerpc import Call

    @app.middleware
    def nothing(call: Call) -> Iterator[None]:
        yield


async def serve_grpclib(port: int) -> None:
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server

    async def echo(stream: Any) -> None:
        request = await stream.recv_message()
        await stream.send_message(EchoResponse(result=request.text))

    async def tokens(stream: Any) -> None:
        request = await stream.recv_message()
        for i in range(request.n):
            await stream.send_message(TokensResponse(result=f"tok{i}"))

    class Servicer:
        def __mapping__(self) -> dict[str, Handler]:
            return {
                f"{SERVICE}/PredictEcho": Handler(
                    echo, Cardinality.UNARY_UNARY, EchoRequest, EchoResponse
                ),
                f"{SERVICE}/PredictTokens": Handler(
                    tokens, Cardinality.UNARY_STREAM, TokensRequest, TokensResponse
                ),
            }

    server = Server([Servicer()])
    await server.start("127.0.0.1", port)
    print(f"ready {port}", flush=True)
    await server.wait_closed()


async def serve_grpcio(port: int) -> None:
    import grpc

    async def echo(request: Any, context: Any) -> Any:
        return EchoResponse(result=request.text)

    async def tokens(request: Any, context: Any) -> Any:
        for i in range(request.n):
            yield TokensResponse(result=f"tok{i}")

    handlers = {
        "PredictEcho": grpc.unary_unary_rpc_method_handler(
            echo, EchoRequest.FromString, EchoResponse.SerializeToString
        ),
        "PredictTokens": grpc.unary_stream_rpc_method_handler(
            tokens, TokensRequest.FromString, TokensResponse.SerializeToString
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("blazerpc.InferenceService", handlers)]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"ready {port}", flush=True)
    await server.wait_for_termination()


def log_like_blaze_serve() -> None:
    """Logging as `blaze serve` sets it up by default, into a file instead of the terminal."""
    import tempfile

    from blazerpc import ServerConfig
    from blazerpc.cli import configure_logging

    sys.stderr = tempfile.TemporaryFile("w")  # lives as long as the process
    configure_logging(ServerConfig())


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "blazerpc+log":
        log_like_blaze_serve()
        asyncio.run(serve_blazerpc(port))
    elif kind.startswith("blazerpc+tls") or kind == "blazerpc+middleware":
        if kind == "blazerpc+middleware":
            with_middleware()
        asyncio.run(serve_blazerpc(port, **secured(kind)))
    elif kind == "blazerpc+no-timers":
        off = ("handshake", "header", "message", "idle")
        timers = {f"{name}_timeout": 0 for name in off} | {"keepalive_interval": 0}
        asyncio.run(serve_blazerpc(port, **timers))
    elif kind == "blazerpc+uvloop":
        import uvloop

        uvloop.run(serve_blazerpc(port))
    else:
        runner = {"blazerpc": serve_blazerpc, "grpclib": serve_grpclib, "grpcio": serve_grpcio}
        asyncio.run(runner[kind](port))
