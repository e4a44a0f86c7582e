"""Serving benchmark: blazerpc against a hand-written grpclib servicer and a grpcio servicer.

    .venv/bin/python -m bench.run [--window 3] [--rounds 2]

Each server runs in its own process on loopback; this process is the load generator (a grpcio
aio client sending raw bytes, as in ../shared/BENCHMARKS.md). Servers are measured one after
the other, in interleaved rounds, and reported as medians and ratios against the grpclib
servicer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc

HERE = Path(__file__).parent
SERVICE = "/blazerpc.InferenceService"
ECHO = b"\x0a\x05hello"  # EchoRequest(text="hello")
SERVERS = ("grpclib", "blazerpc", "blazerpc+uvloop", "grpcio")
TICKS = os.sysconf("SC_CLK_TCK")


def tokens_request(n: int) -> bytes:
    return b"\x08" + _varint(n)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def for_window(seconds: float, workers: int, work: Callable[[], Awaitable[int]]) -> int:
    """Run `workers` loops of `work` for `seconds`; the total of what they return."""
    deadline = time.perf_counter() + seconds
    totals = [0] * workers

    async def loop(i: int) -> None:
        while time.perf_counter() < deadline:
            totals[i] += await work()

    await asyncio.gather(*(loop(i) for i in range(workers)))
    return sum(totals)


@contextlib.contextmanager
def server_process(*args: str) -> Iterator[tuple[int, str]]:
    """`python -m <args>` as a benchmark server: its pid and `ready ...` line; stopped after."""
    with subprocess.Popen(
        [sys.executable, "-m", *args], cwd=HERE.parent, stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            ready = server.stdout.readline()
            assert ready.startswith("ready"), ready
            yield server.pid, ready
        finally:
            server.terminate()


Load = Callable[[grpc.aio.Channel, int, float], Awaitable[dict[str, float]]]
"""A workload: `(channel, server pid, window seconds) -> figures`."""


def measure(
    kind: str, window: float, load: Load, credentials: grpc.ChannelCredentials | None = None
) -> dict[str, float]:
    """Start the `kind` server of bench/servers.py in its own process, load it, stop it.

    With `credentials`, the channel is a TLS one (bench/security.py).
    """
    port = free_port()
    with server_process("bench.servers", kind, str(port)) as (pid, _):
        return asyncio.run(_over_channel(port, pid, window, load, credentials))


async def _over_channel(
    port: int,
    pid: int,
    window: float,
    load: Load,
    credentials: grpc.ChannelCredentials | None,
) -> dict[str, float]:
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        return await load(channel, pid, window)


def interleaved(
    servers: tuple[str, ...],
    load: Load,
    description: str,
    rounds: int,
    credentials: dict[str, grpc.ChannelCredentials] | None = None,
) -> dict[str, dict[str, float]]:
    """Parse --window and --rounds, measure every server in turn each round: the medians.

    `credentials` names the servers that speak TLS, and how to reach them.
    """
    credentials = credentials or {}
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds (medians)")
    args = parser.parse_args()
    figures = [
        {kind: measure(kind, args.window, load, credentials.get(kind)) for kind in servers}
        for _ in range(args.rounds)
    ]
    return medians(figures)


Work = Callable[[], Awaitable[int]]


def typed_calls(channel: grpc.aio.Channel, tokens: int = 200) -> tuple[Work, Work]:
    """One echo call (counts 1), and one stream of `tokens` tokens (counts its tokens)."""
    echo = channel.unary_unary(f"{SERVICE}/PredictEcho")
    stream = channel.unary_stream(f"{SERVICE}/PredictTokens")

    async def one_echo() -> int:
        await echo(ECHO)
        return 1

    async def one_stream() -> int:
        return len([_ async for _ in stream(tokens_request(tokens))])

    return one_echo, one_stream


def medians(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per server and metric, the median over interleaved rounds."""
    return {
        kind: {metric: statistics.median(r[kind][metric] for r in rounds) for metric in figures}
        for kind, figures in rounds[0].items()
    }


async def _measure(channel: grpc.aio.Channel, pid: int, window: float) -> dict[str, float]:
    stream = channel.unary_stream(f"{SERVICE}/PredictTokens")
    one_echo, one_stream = typed_calls(channel)
    results: dict[str, float] = {}
    await for_window(1.0, 16, one_echo)  # warm-up
    for concurrency in (1, 16, 64):
        cpu = cpu_seconds(pid)
        calls = await for_window(window, concurrency, one_echo)
        results[f"unary rps, c={concurrency}"] = calls / window
        if concurrency == 16:
            results["server CPU per unary call (us), c=16"] = (cpu_seconds(pid) - cpu) / calls * 1e6
    for streams in (1, 16):
        tokens = await for_window(window, streams, one_stream)
        results[f"stream tokens/s, {streams} stream{'s' * (streams > 1)}"] = tokens / window
    ttft = await first_token_times(stream)
    results["16-stream TTFT p50 (ms)"] = statistics.median(ttft) * 1e3
    results["16-stream TTFT max (ms)"] = max(ttft) * 1e3
    return results


async def first_token_times(stream: grpc.aio.UnaryStreamMultiCallable) -> list[float]:
    """16 long streams started together, five times: when did each see its first token?"""
    times: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        call = stream(tokens_request(2000))
        async for _ in call:
            times.append(time.perf_counter() - started)
            break
        call.cancel()

    for _ in range(5):
        await asyncio.gather(*(one() for _ in range(16)))
        await asyncio.sleep(0.2)
    return times


def table(results: dict[str, dict[str, float]]) -> str:
    kinds = [k for k in SERVERS if k in results]
    header = "| workload | " + " | ".join(kinds) + " | blazerpc / grpclib |"
    lines = [header, "|" + " --- |" * (len(kinds) + 2)]
    for metric in results[kinds[0]]:
        cells = [f"{results[k][metric]:,.1f}" for k in kinds]
        ratio = results["blazerpc"][metric] / results["grpclib"][metric]
        lines.append(f"| {metric} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    print(table(interleaved(SERVERS, _measure, __doc__ or "", rounds=2)))


if __name__ == "__main__":
    main()
