"""Batching benchmark: a 2 ms-per-call "GPU" model, batched and unbatched, in one run.

    .venv/bin/python -m bench.batching

The model holds a lock for 2 ms per call of its function, whatever the batch size: one GPU.
Unbatched, every call pays the 2 ms alone; batched, concurrent calls share them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time

import grpc

from bench.run import free_port

SERVICE = "/blazerpc.InferenceService"
MAX_WAIT_S = 0.0
EXEC_S = 0.002


def serve(port: int) -> None:
    """The server process: prints `ready`, and the batch stats when it gets SIGTERM."""
    from blazerpc import Batching, BlazeApp, BlazeServer

    app = BlazeApp()
    gpu = asyncio.Lock()

    @app.model("unbatched")
    async def unbatched(x: int) -> int:
        async with gpu:
            await asyncio.sleep(EXEC_S)
            return x

    @app.model("batched", batch=Batching(max_size=64, max_wait_s=MAX_WAIT_S))
    async def batched(x: list[int]) -> list[int]:
        async with gpu:
            await asyncio.sleep(EXEC_S)
            return x

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with BlazeServer(app, port=port) as server:
            print("ready", flush=True)
            await stop.wait()
            stats = server.batch_stats["batched"]
            summary = {
                "batches": stats.batches,
                "items": stats.items,
                "sizes": dict(stats.sizes),
                "mean_queue_ms": stats.queue_time_s / max(stats.items, 1) * 1e3,
                "max_queue_ms": stats.max_queue_time_s * 1e3,
            }
            print(json.dumps(summary), flush=True)

    asyncio.run(main())


async def load(port: int, model: str, concurrency: int, window: float) -> list[float]:
    """Latencies of every call made by `concurrency` loops in `window` seconds."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"{SERVICE}/Predict{model.capitalize()}")
        latencies: list[float] = []
        deadline = time.perf_counter() + window

        async def loop() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await call(b"\x08\x07")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return latencies


def main() -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "bench.batching", "--serve", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        rows = []
        for concurrency in (1, 64):
            for model in ("unbatched", "batched"):
                asyncio.run(load(port, model, concurrency, 1.0))  # warm-up
                latencies = asyncio.run(load(port, model, concurrency, 3.0))
                rows.append((model, concurrency, latencies))
        server.send_signal(signal.SIGTERM)
        stats = json.loads(server.stdout.readline())
    print("| model | concurrency | rps | p50 (ms) | p99 (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for model, concurrency, latencies in rows:
        ordered = sorted(latencies)
        p99 = ordered[int(len(ordered) * 0.99) - 1] * 1e3
        print(
            f"| {model} | {concurrency} | {len(latencies) / 3.0:,.0f} | "
            f"{statistics.median(latencies) * 1e3:.2f} | {p99:.2f} |"
        )
    sizes = {int(size): count for size, count in stats["sizes"].items()}
    grouped = sum(size * count for size, count in sizes.items() if size > 1)
    groups = sum(count for size, count in sizes.items() if size > 1)
    print(
        f"\nbatches: {stats['batches']} for {stats['items']} calls; mean size of the batches "
        f"larger than 1: {grouped / max(groups, 1):.1f}; largest: {max(sizes)}; time queued in "
        f"the batcher: mean {stats['mean_queue_ms']:.2f} ms, max {stats['max_queue_ms']:.2f} ms"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
    else:
        main()
