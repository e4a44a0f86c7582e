"""blazerpc on Ray (`blaze ray`) against `blaze serve`: what the hop to a replica costs.

    .venv/bin/python -m bench.ray [--window 3] [--rounds 2]

Three settings, each round in turn, on bench/apps.py (echo, and a stream of 200 tokens):
- `direct`: `blaze serve`, the models in the server's process;
- `ray`: `blaze ray --address local`, blazerpc's server in front, one replica per model;
- `handle`: Ray Serve's deployment handle called from a driver, no front door at all: the
  floor any front door over Ray pays (a process of its own, with its own local cluster).
The load is one grpcio aio client (the handle setting calls the handle itself). Medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench.run import for_window, free_port, typed_calls

HERE = Path(__file__).parent
BLAZE = shutil.which("blaze", path=str(Path(sys.executable).parent)) or "blaze"
SETTINGS = ("direct", "ray", "handle")


def measure(setting: str, window: float) -> dict[str, float]:
    if setting == "handle":
        done = subprocess.run(
            [sys.executable, "-m", "bench.ray", "--handle", "--window", str(window)],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            check=True,
        )
        figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
        return figures
    port = free_port()
    command = [BLAZE, "serve" if setting == "direct" else "ray", "bench/apps.py:app"]
    command += ["--port", str(port), "--log-level", "warning"]
    if setting == "ray":
        command += ["--address", "local", "--cluster-cpus", "2"]
    with subprocess.Popen(
        command, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().startswith("blazerpc serving")
            return asyncio.run(_over_grpc(port, window))
        finally:
            server.terminate()
            server.wait(timeout=60)


async def _over_grpc(port: int, window: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        one_echo, one_stream = typed_calls(channel)
        return await _figures(one_echo, one_stream, window)


async def _figures(one_echo: Any, one_stream: Any, window: float) -> dict[str, float]:
    await for_window(1.0, 16, one_echo)  # warm-up
    latencies = []
    deadline = time.perf_counter() + window
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        await one_echo()
        latencies.append(time.perf_counter() - started)
    return {
        "unary p50 latency (ms), c=1": statistics.median(latencies) * 1e3,
        "unary rps, c=1": len(latencies) / window,
        "unary rps, c=16": await for_window(window, 16, one_echo) / window,
        "stream tokens/s, 1 stream": await for_window(window, 1, one_stream) / window,
    }


def handle_only(window: float) -> dict[str, float]:
    """The models deployed as `blaze ray` deploys them, called through their handles."""
    from blazerpc.ray import RayCluster, RayDeployment
    from blazerpc.ray.envelope import RemoteRequest

    with RayCluster("local", num_cpus=2):
        deployment = RayDeployment("bench/apps.py:app")
        deployment.deploy()
        try:
            echo = deployment._routes["echo"].handle
            tokens = deployment._routes["tokens"].streaming

            async def one_echo() -> int:
                await echo.unary.remote(RemoteRequest({"text": "hello"}, "", None, None, None))
                return 1

            async def one_stream() -> int:
                request = RemoteRequest({"n": 200}, "", None, None, None)
                return len([_ async for _ in tokens.stream.remote(request)])

            return asyncio.run(_figures(one_echo, one_stream, window))
        finally:
            deployment.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--window", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (medians)")
    parser.add_argument("--handle", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.handle:
        print(json.dumps(handle_only(args.window)))
        return
    rounds = [{s: measure(s, args.window) for s in SETTINGS} for _ in range(args.rounds)]
    print("| workload | " + " | ".join(SETTINGS) + " | ray / direct |")
    print("|" + " --- |" * (len(SETTINGS) + 2))
    for metric in rounds[0]["direct"]:
        values = {s: statistics.median(r[s][metric] for r in rounds) for s in SETTINGS}
        cells = " | ".join(f"{values[s]:,.2f}" for s in SETTINGS)
        print(f"| {metric} | {cells} | {values['ray'] / values['direct']:.2f}x |")


if __name__ == "__main__":
    main()
