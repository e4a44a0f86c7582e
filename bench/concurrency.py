"""Concurrency of an unbatched sync model: a scikit-learn RandomForest on the digits data set.

    .venv/bin/python -m bench.concurrency [--window 4] [--rounds 3]

The server (its own process) serves one sync model, `classify(pixels: list[float]) -> int`,
with `max_concurrent` None (anyio's 40 worker threads decide), 1, 2, 4 and 8. Each is loaded
with stock grpcio unary calls at concurrency 1 and 32; reported per setting: requests per
second and p99 latency, medians of the rounds, the settings interleaved in each round.
Needs scikit-learn (`pip install scikit-learn`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

import grpc

from bench.run import free_port

SETTINGS = ["none", "1", "2", "4", "8"]
PATH = "/blazerpc.InferenceService/PredictClassify"


def _server(max_concurrent: str, port: int) -> None:
    """Run in the server's process: train, then serve until killed."""
    from collections.abc import Iterator

    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    from blazerpc import BlazeApp, BlazeServer

    app = BlazeApp()
    forest: dict[str, RandomForestClassifier] = {}

    @app.lifespan
    def train() -> Iterator[None]:
        digits = load_digits()
        forest["model"] = RandomForestClassifier(n_estimators=100, random_state=0).fit(
            digits.data, digits.target
        )
        yield

    bound = None if max_concurrent == "none" else int(max_concurrent)

    @app.model("classify", max_concurrent=bound)
    def classify(pixels: list[float]) -> int:
        return int(forest["model"].predict([pixels])[0])

    async def serve() -> None:
        async with BlazeServer(app, port=port) as server:
            print(f"ready {server.port}", flush=True)
            await asyncio.Event().wait()

    asyncio.run(serve())


def _request() -> bytes:
    from sklearn.datasets import load_digits

    pixels = [float(v) for v in load_digits().data[7]]
    body = b"".join(__import__("struct").pack("<d", p) for p in pixels)
    return b"\x0a" + _varint(len(body)) + body  # ClassifyRequest(pixels=[...]), packed doubles


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


async def _load(port: int, concurrency: int, window: float, request: bytes) -> tuple[float, float]:
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(PATH)
        for _ in range(20):
            await call(request)  # warm-up
        deadline = time.perf_counter() + window

        async def loop() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await call(request)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    latencies.sort()
    return len(latencies) / window, latencies[int(len(latencies) * 0.99)] * 1000


def _measure(setting: str, window: float, request: bytes) -> dict[int, tuple[float, float]]:
    port = free_port()
    command = [sys.executable, "-m", "bench.concurrency", "--serve", setting, str(port)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().startswith("ready")
            return {c: asyncio.run(_load(port, c, window, request)) for c in (1, 32)}
        finally:
            server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _server(args.serve[0], int(args.serve[1]))
        return
    request = _request()
    rounds = [{s: _measure(s, args.window, request) for s in SETTINGS} for _ in range(args.rounds)]
    print("| max_concurrent | rps, c=1 | p99 ms, c=1 | rps, c=32 | p99 ms, c=32 |")
    print("| --- | --- | --- | --- | --- |")
    for setting in SETTINGS:
        cells = []
        for c in (1, 32):
            rps = statistics.median(r[setting][c][0] for r in rounds)
            p99 = statistics.median(r[setting][c][1] for r in rounds)
            cells += [f"{rps:,.0f}", f"{p99:,.1f}"]
        print(f"| {setting} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
