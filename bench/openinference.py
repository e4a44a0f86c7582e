"""Open Inference Protocol benchmark: ModelInfer and ModelStreamInfer through tritonclient.

    .venv/bin/python -m bench.openinference [--window 3] [--rounds 2]

One blazerpc server process (bench/apps.py) serves both its typed service and
`inference.GRPCInferenceService`; this process loads each side in turn, in interleaved rounds:
- typed: bench.run's grpcio aio client sending raw bytes (the typed service's own figures);
- oip: tritonclient's asyncio gRPC client, as a Triton or KServe user would call the server:
  `infer("echo", ...)` at concurrency 16, and one `stream_infer` stream of the `tokens` model.

MLServer 1.7.1 did 1,368 unary rps at concurrency 16 (grpc.aio client) and 4,320 tokens/s on
one ModelStreamInfer stream on this machine kind (../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput

from bench.run import (
    cpu_seconds,
    for_window,
    free_port,
    server_process,
    typed_calls,
)

TOKENS = 200


def _text(name: str, value: bytes) -> InferInput:
    tensor = InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value], dtype=np.object_))
    return tensor


def _n(value: int) -> InferInput:
    tensor = InferInput("n", [1], "INT64")
    tensor.set_data_from_numpy(np.array([value], dtype=np.int64))
    return tensor


async def oip(port: int, pid: int, window: float) -> dict[str, float]:
    client = triton_aio.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = [_text("text", b"hello")]

    async def one_echo() -> int:
        result = await client.infer("echo", inputs)
        assert result.as_numpy("result")[0] == b"hello"
        return 1

    async def one_stream() -> int:
        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": "tokens", "inputs": [_n(TOKENS)]}

        count = 0
        async for _result, error in client.stream_infer(requests()):
            assert error is None, error
            count += 1
            if count == TOKENS:
                break
        return count

    try:
        return await _load(one_echo, one_stream, pid, window)
    finally:
        await client.close()


async def typed(port: int, pid: int, window: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        one_echo, one_stream = typed_calls(channel, TOKENS)
        return await _load(one_echo, one_stream, pid, window)


async def _load(one_echo: Any, one_stream: Any, pid: int, window: float) -> dict[str, float]:
    await for_window(1.0, 16, one_echo)  # warm-up
    cpu = cpu_seconds(pid)
    calls = await for_window(window, 16, one_echo)
    results = {
        "unary rps, c=16": calls / window,
        "server CPU per unary call (us)": (cpu_seconds(pid) - cpu) / calls * 1e6,
    }
    cpu = cpu_seconds(pid)
    tokens = await for_window(window, 1, one_stream)
    results["stream tokens/s, 1 stream"] = tokens / window
    results["server CPU per token (us)"] = (cpu_seconds(pid) - cpu) / tokens * 1e6
    return results


def measure(window: float) -> dict[str, dict[str, float]]:
    port = free_port()
    with server_process("bench.servers", "blazerpc", str(port)) as (pid, _):
        time.sleep(0.2)
        return {
            "typed": asyncio.run(typed(port, pid, window)),
            "oip": asyncio.run(oip(port, pid, window)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (medians)")
    args = parser.parse_args()
    rounds = [measure(args.window) for _ in range(args.rounds)]
    mlserver = {"unary rps, c=16": 1368.0, "stream tokens/s, 1 stream": 4320.0}
    header = ["workload", "typed gRPC", "Open Inference (tritonclient)", "MLServer 1.7.1"]
    print("| " + " | ".join(header) + " | oip / MLServer |")
    print("| --- | --- | --- | --- | --- |")
    for metric in rounds[0]["oip"]:
        typed_value = statistics.median(r["typed"][metric] for r in rounds)
        oip_value = statistics.median(r["oip"][metric] for r in rounds)
        reference = mlserver.get(metric)
        ratio = f"{oip_value / reference:.2f}x" if reference else "-"
        cells = [
            f"{typed_value:,.1f}",
            f"{oip_value:,.1f}",
            f"{reference:,.0f}" if reference else "-",
        ]
        print(f"| {metric} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main()
