"""The hot path: blazerpc's unary and stream costs against a hand-written grpclib servicer.

    .venv/bin/python -m bench.hotpath [--window 3] [--rounds 3]

Three servers, each in its own process, measured one after the other in interleaved rounds:
the grpclib servicer of bench/servers.py, blazerpc with the access log on as `blaze serve`
configures it (INFO, one line per call, written to a file), and blazerpc with no logging
configured (the access log off). All run on asyncio. Server CPU is the server process's whole
CPU (every thread), read from /proc. Reported as medians, and as ratios to the servicer.
"""

from __future__ import annotations

import grpc

from bench.run import cpu_seconds, for_window, interleaved, typed_calls

SERVERS = ("grpclib", "blazerpc+log", "blazerpc")
TARGETS = {
    ("blazerpc+log", "unary rps, c=16"): ">= 0.90x",
    ("blazerpc", "unary rps, c=16"): ">= 0.95x",
    ("blazerpc+log", "server CPU per unary call (us), c=16"): "<= 1.10x",
    ("blazerpc", "server CPU per unary call (us), c=16"): "<= 1.05x",
    ("blazerpc+log", "stream tokens/s, 1 stream"): ">= 0.90x",
    ("blazerpc+log", "stream tokens/s, 16 streams"): ">= 0.90x",
}


async def _load(channel: grpc.aio.Channel, pid: int, window: float) -> dict[str, float]:
    one_echo, one_stream = typed_calls(channel)
    await for_window(1.0, 16, one_echo)  # warm-up
    cpu = cpu_seconds(pid)
    calls = await for_window(window, 16, one_echo)
    results = {
        "unary rps, c=16": calls / window,
        "server CPU per unary call (us), c=16": (cpu_seconds(pid) - cpu) / calls * 1e6,
    }
    for streams in (1, 16):
        tokens = await for_window(window, streams, one_stream)
        results[f"stream tokens/s, {streams} stream{'s' * (streams > 1)}"] = tokens / window
    return results


def table(results: dict[str, dict[str, float]]) -> str:
    """Medians per server, then each blazerpc's ratio to the servicer and its target."""
    lines = [
        "| workload | " + " | ".join(SERVERS) + " | +log / grpclib | no log / grpclib |",
        "|" + " --- |" * (len(SERVERS) + 3),
    ]
    for metric in results["grpclib"]:
        cells = [f"{results[kind][metric]:,.1f}" for kind in SERVERS]
        ratios = [
            f"{results[kind][metric] / results['grpclib'][metric]:.2f}x"
            + (f" ({TARGETS[kind, metric]})" if (kind, metric) in TARGETS else "")
            for kind in ("blazerpc+log", "blazerpc")
        ]
        lines.append(f"| {metric} | " + " | ".join([*cells, *ratios]) + " |")
    return "\n".join(lines)


def main() -> None:
    print(table(interleaved(SERVERS, _load, __doc__ or "", rounds=3)))


if __name__ == "__main__":
    main()
