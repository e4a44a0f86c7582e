"""What metrics and the access log cost: server CPU per item and per call, side by side.

    .venv/bin/python -m bench.metrics [--window 3] [--rounds 3]

The same app (bench/apps.py) runs as `blaze serve` three ways: plain (`--log-level warning`),
with `--metrics-port`, and with the access log (`--log-level info`, stderr to /dev/null). The
load is a grpcio aio client: 16 streams of 200 tokens, then unary calls at concurrency 16. The
figure that matters is the server's CPU time per token or call (from /proc), as a ratio.
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

from bench.run import cpu_seconds, for_window, free_port, typed_calls

HERE = Path(__file__).parent
BLAZE = shutil.which("blaze", path=str(Path(sys.executable).parent)) or "blaze"
SETTINGS = {
    "plain": ["--log-level", "warning"],
    "metrics": ["--log-level", "warning", "--metrics-port", "0"],
    "access log": ["--log-level", "info"],
}


def measure(setting: str, window: float) -> dict[str, float]:
    port = free_port()
    command = [BLAZE, "serve", "bench/apps.py:app", "--port", str(port), *SETTINGS[setting]]
    with subprocess.Popen(
        command, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().startswith("blazerpc serving")
            return asyncio.run(_load(port, server.pid, window))
        finally:
            server.terminate()
            server.wait(timeout=30)


async def _load(port: int, pid: int, window: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        one_echo, one_stream = typed_calls(channel)
        await for_window(1.0, 16, one_echo)  # warm-up
        cpu = cpu_seconds(pid)
        tokens = await for_window(window, 16, one_stream)
        stream_cpu = cpu_seconds(pid) - cpu
        cpu = cpu_seconds(pid)
        calls = await for_window(window, 16, one_echo)
        unary_cpu = cpu_seconds(pid) - cpu
    return {
        "stream tokens/s, 16 streams": tokens / window,
        "server CPU per token (us)": stream_cpu / tokens * 1e6,
        "unary rps, c=16": calls / window,
        "server CPU per unary call (us)": unary_cpu / calls * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {setting: [] for setting in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            runs[setting].append(measure(setting, args.window))
    medians = {
        setting: {key: statistics.median(run[key] for run in results) for key in results[0]}
        for setting, results in runs.items()
    }
    print("| metric | " + " | ".join(SETTINGS) + " | metrics / plain | access log / plain |")
    print("| --- |" + " --- |" * (len(SETTINGS) + 2))
    for key in medians["plain"]:
        row = [medians[setting][key] for setting in SETTINGS]
        cells = " | ".join(f"{value:,.1f}" for value in row)
        print(f"| {key} | {cells} | {row[1] / row[0]:.2f}x | {row[2] / row[0]:.2f}x |")


if __name__ == "__main__":
    main()
