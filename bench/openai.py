"""OpenAI-compatible route benchmark: tokens/s and time to first token over
`POST /v1/chat/completions` (stream: true), next to the plain SSE route, one server.

    .venv/bin/python -m bench.openai [--window 3] [--rounds 3]

One server process (`BlazeServer(app, http_port=...)`, as `blaze serve --http-port` runs it)
holds two models with the same generator that never awaits: `tokens` on `/models/tokens`
and `chat` (openai="chat") on `/v1/chat/completions`. The load generator is a raw asyncio
HTTP/1.1 client that counts token events (the openai client and httpx would be the
bottleneck); a third row times the stock `openai` client itself, one stream. The routes are
measured in turn within each round, and the medians of the rounds are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable

from bench.run import cpu_seconds, free_port, server_process
from blazerpc import BlazeApp
from blazerpc.openai import ChatMessage

app = BlazeApp()


@app.model("tokens", streaming=True)
async def tokens(n: int) -> AsyncIterator[str]:
    """n tokens, never awaiting: the route's own cost is all there is to measure."""
    for i in range(n):
        yield f"tok{i}"


@app.model("chat", streaming=True, openai="chat")
async def chat(messages: list[ChatMessage], max_tokens: int = 16) -> AsyncIterator[str]:
    """The same tokens, as an OpenAI chat model."""
    for i in range(max_tokens):
        yield f"tok{i}"


_END = b"\r\n0\r\n\r\n"
ROUTES: dict[str, tuple[bytes, Callable[[int], bytes], bytes]] = {
    "plain SSE (/models/tokens)": (
        b"/models/tokens",
        lambda n: b'{"n": %d}' % n,
        b'data: {"result"',
    ),
    "OpenAI (/v1/chat/completions)": (
        b"/v1/chat/completions",
        lambda n: (
            b'{"model": "chat", "stream": true, "max_tokens": %d, '
            b'"messages": [{"role": "user", "content": "hi"}]}' % n
        ),
        b'"delta":{"content"',
    ),
}


class StreamClient:
    """One keep-alive connection posting stream requests to one route, counting tokens."""

    def __init__(self, port: int, route: str) -> None:
        self.port = port
        self.path, self.body, self.marker = ROUTES[route]
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def stream(self, n: int, on_first: Callable[[], None] | None = None) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        body = self.body(n)
        self._writer.write(
            b"POST %s HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (self.path, len(body), body)
        )
        tail = b""
        count = 0
        while not tail.endswith(_END):
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            window = tail[-(len(self.marker) - 1) :] + data
            count += window.count(self.marker)
            if on_first is not None and count:
                on_first()
                self.close()  # the rest of this stream is not read: start afresh next time
                return count
            tail = (tail + data)[-64:]
        return count

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


async def load(port: int, pid: int, route: str, window: float) -> dict[str, float]:
    results: dict[str, float] = {}
    for streams in (1, 16):
        clients = [StreamClient(port, route) for _ in range(streams)]
        await _streams_for(0.5, clients)
        cpu = cpu_seconds(pid)
        count = await _streams_for(window, clients)
        results[f"tokens/s, {streams} stream{'s' * (streams > 1)}"] = count / window
        if streams == 16:
            results["server CPU per token (us), 16 streams"] = (
                (cpu_seconds(pid) - cpu) / count * 1e6
            )
        for client in clients:
            client.close()
    ttft = await first_token_times(port, route)
    results["16-stream TTFT p50 (ms)"] = statistics.median(ttft) * 1e3
    results["16-stream TTFT max (ms)"] = max(ttft) * 1e3
    return results


async def _streams_for(seconds: float, clients: list[StreamClient]) -> int:
    deadline = time.perf_counter() + seconds

    async def loop(client: StreamClient) -> int:
        count = 0
        while time.perf_counter() < deadline:
            count += await client.stream(200)
        return count

    return sum(await asyncio.gather(*(loop(client) for client in clients)))


async def first_token_times(port: int, route: str) -> list[float]:
    """16 long streams started together, five times: when did each see its first token?"""
    times: list[float] = []

    async def one() -> None:
        client = StreamClient(port, route)
        started = time.perf_counter()
        await client.stream(2000, on_first=lambda: times.append(time.perf_counter() - started))

    for _ in range(5):
        await asyncio.gather(*(one() for _ in range(16)))
        await asyncio.sleep(0.2)
    return times


def stock_client_rate(port: int, window: float) -> float:
    """Tokens/s the stock `openai` client reads, one stream of 200 after another."""
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    deadline = time.perf_counter() + window
    count = 0
    while time.perf_counter() < deadline:
        with client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=200, stream=True
        ) as chunks:
            count += sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content)
    return count / window


async def serve(port: int) -> None:
    from blazerpc import BlazeServer

    async with BlazeServer(app, port=0, http_port=port, log_level="warning") as server:
        print(f"ready {server.port}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return
    port = free_port()
    rounds: list[dict[str, dict[str, float]]] = []
    stock: list[float] = []
    with server_process("bench.openai", "--serve", str(port)) as (pid, _):
        for _ in range(args.rounds):
            rounds.append(
                {route: asyncio.run(load(port, pid, route, args.window)) for route in ROUTES}
            )
            stock.append(stock_client_rate(port, args.window))
    names = list(ROUTES)
    print("| workload | " + " | ".join(names) + " | OpenAI / plain |")
    print("|" + " --- |" * (len(names) + 2))
    for metric in rounds[0][names[0]]:
        values = [statistics.median(r[name][metric] for r in rounds) for name in names]
        ratio = values[1] / values[0] if values[0] else 0.0
        cells = " | ".join(f"{value:,.1f}" for value in values)
        print(f"| {metric} | {cells} | {ratio:.2f}x |")
    print(f"| stock openai client, tokens/s, 1 stream | - | {statistics.median(stock):,.1f} | - |")


if __name__ == "__main__":
    main()
