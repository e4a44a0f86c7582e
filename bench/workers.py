"""`blaze serve --workers 2` against `--workers 1`: unary throughput over several connections.

    .venv/bin/python -m bench.workers [--window 5] [--rounds 3] [--connections 8]

Each server runs as the real command (`blaze serve bench/apps.py:app`, access log off); the
load comes from two client processes, each with its own TCP connections (SO_REUSEPORT spreads
connections, not calls, so one connection would reach one worker only). Rounds interleave the
two settings; the table shows medians and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import grpc

from bench.run import ECHO, SERVICE, for_window, free_port

HERE = Path(__file__).parent
BLAZE = shutil.which("blaze", path=str(Path(sys.executable).parent)) or "blaze"
CLIENT_PROCESSES = 2
CALLS_IN_FLIGHT_PER_CONNECTION = 8


def measure(workers: int, window: float, connections: int) -> float:
    """Unary calls per second served by `workers` processes."""
    port = free_port()
    command = [BLAZE, "serve", "bench/apps.py:app", "--port", str(port)]
    command += ["--workers", str(workers), "--log-level", "warning"]
    with subprocess.Popen(command, cwd=HERE.parent, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().startswith("blazerpc serving")
            clients = [
                subprocess.Popen(
                    [sys.executable, "-m", "bench.workers", "--client", str(port)]
                    + ["--window", str(window), "--connections", str(connections)],
                    cwd=HERE.parent,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(CLIENT_PROCESSES)
            ]
            calls = sum(int(client.communicate(timeout=window + 60)[0]) for client in clients)
            return calls / window
        finally:
            server.terminate()
            server.wait(timeout=30)


async def load(port: int, window: float, connections: int) -> int:
    """Unary calls completed in `window` s over `connections` separate TCP connections."""
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(connections)
    ]
    try:
        calls = [channel.unary_unary(f"{SERVICE}/PredictEcho") for channel in channels]

        async def one(index: int) -> int:
            await calls[index % connections](ECHO)
            return 1

        counter = iter(range(1 << 62))
        await for_window(1.0, connections * 2, lambda: one(next(counter)))  # warm-up
        return await for_window(
            window, connections * CALLS_IN_FLIGHT_PER_CONNECTION, lambda: one(next(counter))
        )
    finally:
        for channel in channels:
            await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8, help="in all, split over the clients")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:
        print(asyncio.run(load(args.client, args.window, args.connections // CLIENT_PROCESSES)))
        return
    results: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for workers in results:
            results[workers].append(measure(workers, args.window, args.connections))
    one, two = (statistics.median(results[workers]) for workers in (1, 2))
    total = args.connections
    print(f"| unary rps, {total} connections | 1 worker | 2 workers | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| median of {args.rounds} rounds | {one:,.0f} | {two:,.0f} | {two / one:.2f}x |")


if __name__ == "__main__":
    main()
