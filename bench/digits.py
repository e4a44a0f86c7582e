"""examples/digits.py under load: the RandomForest served one call at a time and with adaptive
batching, rps and p50/p99 at concurrency 1 and 32.

    .venv/bin/python -m bench.digits [--window 4] [--rounds 3]

`blaze serve` would run the example the same way: here the server is `BlazeServer` on the
example's app, in its own process; stock grpcio unary calls, each one 8x8 image as a
float32 Tensor, measured interleaved, medians of the rounds. Needs the `examples` extra.
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

MODELS = {"unbatched": "digit", "batched": "digit-batched"}


def _serve(port: int) -> None:
    from blazerpc import BlazeServer
    from examples.digits import app

    async def serve() -> None:
        async with BlazeServer(app, port=port, log_level="warning"):
            print("ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(serve())


def _request() -> bytes:
    import numpy as np
    from sklearn.datasets import load_digits

    from blazerpc.wire.protobuf import SchemaCodec
    from examples.digits import app

    request = SchemaCodec(app.schema).classes["DigitRequest"]()
    image = load_digits().data[7].astype(np.float32)
    request.pixels.dtype, request.pixels.data = "float32", image.tobytes()  # type: ignore[attr-defined]
    request.pixels.shape.append(64)  # type: ignore[attr-defined]
    return request.SerializeToString()


async def _load(port: int, model: str, concurrency: int, window: float) -> list[float]:
    request = _request()
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        path = "/blazerpc.InferenceService/Predict" + "".join(
            part.capitalize() for part in model.split("-")
        )
        call = channel.unary_unary(path)
        for _ in range(20):
            await call(request)  # warm-up
        deadline = time.perf_counter() + window

        async def loop() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await call(request)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies


def _figures(latencies: list[float], window: float) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    return (
        len(ordered) / window,
        statistics.median(ordered) * 1e3,
        ordered[int(len(ordered) * 0.99) - 1] * 1e3,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        _serve(args.serve)
        return
    port = free_port()
    command = [sys.executable, "-m", "bench.digits", "--serve", str(port)]
    rounds: list[dict[tuple[str, int], tuple[float, float, float]]] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().startswith("ready")
            for _ in range(args.rounds):
                figures = {}
                for kind, model in MODELS.items():
                    for concurrency in (1, 32):
                        latencies = asyncio.run(_load(port, model, concurrency, args.window))
                        figures[kind, concurrency] = _figures(latencies, args.window)
                rounds.append(figures)
        finally:
            server.terminate()
    print("| served | rps, c=1 | p50 ms | p99 ms | rps, c=32 | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind in MODELS:
        cells = []
        for concurrency in (1, 32):
            for i in range(3):
                cells.append(f"{statistics.median(r[kind, concurrency][i] for r in rounds):,.1f}")
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
