"""HTTP gateway benchmark: Server-Sent Events tokens/s and time to first token, next to gRPC.

    .venv/bin/python -m bench.http [--window 3] [--rounds 2]

Servers, each in its own process on loopback, streaming the same model (bench/apps.py
`tokens`, a generator that never awaits):
- blazerpc: `BlazeServer(app, http_port=...)`, the gateway as `blaze serve --http-port` runs it
  (uvicorn with httptools); its gRPC port is measured too, with the grpcio client of bench.run.
- blazerpc-h11: the same gateway (`app.asgi()`) on uvicorn's pure-Python h11 parser, to show
  what httptools buys.
- raw-asgi: a bare ASGI app writing the same SSE bytes to uvicorn+httptools with no framework:
  the ceiling for any gateway on this server.

The load generator is a raw asyncio HTTP/1.1 client (one keep-alive connection per stream
worker), so it parses no more than it must; httpx would be the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from bench.run import (
    ECHO,
    cpu_seconds,
    first_token_times,
    for_window,
    free_port,
    server_process,
    tokens_request,
)

SERVERS = ("raw-asgi", "blazerpc", "blazerpc-h11")
_END = b"\r\n0\r\n\r\n"
_TOKEN = b'data: {"result"'


async def serve(kind: str, port: int) -> None:
    import uvicorn

    from bench.apps import app

    if kind == "blazerpc":
        from blazerpc import BlazeServer

        async with BlazeServer(app, port=0, http_port=port, log_level="warning") as server:
            print(f"ready {server.port}", flush=True)
            await asyncio.Event().wait()
    asgi = app.asgi() if kind == "blazerpc-h11" else _raw_asgi
    config = uvicorn.Config(
        asgi, port=port, http="h11" if kind == "blazerpc-h11" else "httptools", log_level="error"
    )
    server = uvicorn.Server(config)
    print("ready 0", flush=True)
    await server.serve()


async def _raw_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least an SSE endpoint can do: read the body, write one event per token."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"].endswith("/echo"):
        answer = b'{"result":"hello"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"18")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        return
    n = int(body.split(b":")[1].strip(b" }"))
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(n):
        chunk = b'data: {"result":"tok%d"}\n\n' % i
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class SseClient:
    """One keep-alive connection posting stream requests and counting token events."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def stream(self, n: int, on_first: Any = None) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        body = b'{"n": %d}' % n
        self._writer.write(
            b"POST /models/tokens HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        tail = b""  # the last bytes read: a marker may span two reads
        tokens = 0
        while not tail.endswith(_END):
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            window = tail[-(len(_TOKEN) - 1) :] + data
            tokens += window.count(_TOKEN)
            if on_first is not None and tokens:
                on_first()
                return tokens
            tail = (tail + data)[-64:]
        return tokens

    async def echo(self) -> int:
        """One unary call to `echo`; the answer is read by its content-length."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        body = b'{"text": "hello"}'
        self._writer.write(
            b"POST /models/echo HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await self._reader.readexactly(length)
        return 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


async def load(port: int, pid: int, window: float) -> dict[str, float]:
    results: dict[str, float] = {}
    for streams in (1, 16):
        clients = [SseClient(port) for _ in range(streams)]
        await _streams_for(0.5, clients)  # warm-up
        cpu = cpu_seconds(pid)
        tokens = await _streams_for(window, clients)
        results[f"SSE tokens/s, {streams} stream{'s' * (streams > 1)}"] = tokens / window
        if streams == 16:
            results["SSE server CPU per token (us), 16 streams"] = (
                (cpu_seconds(pid) - cpu) / tokens * 1e6
            )
        for client in clients:
            client.close()
    clients = [SseClient(port) for _ in range(16)]
    await _unary_for(0.5, clients)
    cpu = cpu_seconds(pid)
    calls = await _unary_for(window, clients)
    results["HTTP unary rps, c=16"] = calls / window
    results["HTTP server CPU per unary call (us)"] = (cpu_seconds(pid) - cpu) / calls * 1e6
    for client in clients:
        client.close()
    ttft = await sse_first_token_times(port)
    results["SSE 16-stream TTFT p50 (ms)"] = statistics.median(ttft) * 1e3
    results["SSE 16-stream TTFT max (ms)"] = max(ttft) * 1e3
    return results


async def _streams_for(seconds: float, clients: list[SseClient]) -> int:
    """Each client streams 200 tokens after 200 tokens until the window closes."""
    deadline = time.perf_counter() + seconds

    async def loop(client: SseClient) -> int:
        tokens = 0
        while time.perf_counter() < deadline:
            tokens += await client.stream(200)
        return tokens

    return sum(await asyncio.gather(*(loop(client) for client in clients)))


async def _unary_for(seconds: float, clients: list[SseClient]) -> int:
    """Each client calls `echo` again and again until the window closes."""
    deadline = time.perf_counter() + seconds

    async def loop(client: SseClient) -> int:
        calls = 0
        while time.perf_counter() < deadline:
            calls += await client.echo()
        return calls

    return sum(await asyncio.gather(*(loop(client) for client in clients)))


async def sse_first_token_times(port: int) -> list[float]:
    """16 long streams started together, five times: when did each see its first token?"""
    times: list[float] = []

    async def one() -> None:
        client = SseClient(port)
        started = time.perf_counter()
        await client.stream(2000, on_first=lambda: times.append(time.perf_counter() - started))
        client.close()

    for _ in range(5):
        await asyncio.gather(*(one() for _ in range(16)))
        await asyncio.sleep(0.2)
    return times


async def grpc_load(port: int, pid: int, window: float) -> dict[str, float]:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = channel.unary_stream("/blazerpc.InferenceService/PredictTokens")

        async def one() -> int:
            return len([_ async for _ in stream(tokens_request(200))])

        echo = channel.unary_unary("/blazerpc.InferenceService/PredictEcho")

        async def one_echo() -> int:
            await echo(ECHO)
            return 1

        await for_window(0.5, 16, one_echo)
        cpu = cpu_seconds(pid)
        calls = await for_window(window, 16, one_echo)
        results: dict[str, float] = {
            "gRPC unary rps, c=16": calls / window,
            "gRPC server CPU per unary call (us)": (cpu_seconds(pid) - cpu) / calls * 1e6,
        }
        for streams in (1, 16):
            await for_window(0.5, streams, one)
            cpu = cpu_seconds(pid)
            tokens = await for_window(window, streams, one)
            results[f"gRPC tokens/s, {streams} stream{'s' * (streams > 1)}"] = tokens / window
            if streams == 16:
                results["gRPC server CPU per token (us), 16 streams"] = (
                    (cpu_seconds(pid) - cpu) / tokens * 1e6
                )
        ttft = await first_token_times(stream)
        results["gRPC 16-stream TTFT p50 (ms)"] = statistics.median(ttft) * 1e3
        results["gRPC 16-stream TTFT max (ms)"] = max(ttft) * 1e3
        return results


def measure(kind: str, window: float) -> dict[str, float]:
    port = free_port()
    with server_process("bench.http", "--serve", kind, str(port)) as (pid, ready):
        time.sleep(0.5)  # uvicorn announces before it listens in the raw case
        results = asyncio.run(load(port, pid, window))
        if kind == "blazerpc":
            results |= asyncio.run(grpc_load(int(ready.split()[1]), pid, window))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (medians)")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve[0], int(args.serve[1])))
        return
    rounds = [{kind: measure(kind, args.window) for kind in SERVERS} for _ in range(args.rounds)]
    metrics = list(rounds[0]["blazerpc"])
    print("| workload | " + " | ".join(SERVERS) + " | blazerpc / raw-asgi |")
    print("|" + " --- |" * (len(SERVERS) + 2))
    for metric in metrics:
        values = {
            kind: statistics.median(r[kind][metric] for r in rounds if metric in r[kind])
            if metric in rounds[0][kind]
            else None
            for kind in SERVERS
        }
        cells = [f"{v:,.1f}" if v is not None else "-" for v in values.values()]
        raw = values["raw-asgi"]
        ratio = f"{values['blazerpc'] / raw:.2f}x" if raw else "-"
        print(f"| {metric} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main()
