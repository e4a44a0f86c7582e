"""examples/tinylm.py under load: tokens/s at 1 and 32 streams, continuous batching against
the same model unbatched (each stream its own generator, one character per matrix product).

    .venv/bin/python -m bench.tinylm [--window 4] [--rounds 3]

Each server in its own process; stock grpcio streaming calls of `tinylm-complete`
(200 characters at temperature 1), one after another per client. Needs the `examples` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Iterator
from typing import Any

from bench.run import free_port, server_process

KINDS = ("continuous", "unbatched")
PATH = "/blazerpc.InferenceService/PredictTinylmComplete"


def _unbatched_app() -> Any:
    import numpy as np

    from blazerpc import BlazeApp
    from examples import tinylm

    app = BlazeApp()
    app.lifespan(tinylm.train)  # the same training

    @app.model("tinylm-complete", streaming=True)
    def complete(prompt: str, max_tokens: int = 16, temperature: float = 1.0) -> Iterator[str]:
        model = tinylm.lm["model"]
        context = ([model.codes.get(" ", 0)] * tinylm.CONTEXT + model.encode(prompt))[
            -tinylm.CONTEXT :
        ]
        rng = np.random.default_rng(0)
        for _ in range(max_tokens):
            code = tinylm._sample(model.scores(np.array([context]))[0], temperature, rng)
            context = [*context[1:], code]
            yield model.chars[code]

    return app


async def serve(kind: str, port: int) -> None:
    from blazerpc import BlazeServer
    from examples.tinylm import app

    served = app if kind == "continuous" else _unbatched_app()
    async with BlazeServer(served, port=port, log_level="warning"):
        print("ready", flush=True)
        await asyncio.Event().wait()


async def load(port: int, streams: int, window: float) -> float:
    import grpc

    from blazerpc.wire.protobuf import SchemaCodec
    from examples.tinylm import app

    request: Any = SchemaCodec(app.schema).classes["TinylmCompleteRequest"](
        prompt="The server ", max_tokens=200, temperature=1.0
    )
    body = request.SerializeToString()
    tokens = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_stream(PATH)
        deadline = time.perf_counter() + window

        async def client() -> None:
            nonlocal tokens
            while time.perf_counter() < deadline:
                async for _ in call(body):
                    tokens += 1

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(streams)))
        return tokens / (time.perf_counter() - began)


def measure(kind: str, window: float) -> dict[int, float]:
    port = free_port()
    with server_process("bench.tinylm", "--serve", kind, str(port)):
        return {streams: asyncio.run(load(port, streams, window)) for streams in (1, 32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve[0], int(args.serve[1])))
        return
    rounds = [{kind: measure(kind, args.window) for kind in KINDS} for _ in range(args.rounds)]
    print("| served | tokens/s, 1 stream | tokens/s, 32 streams |")
    print("| --- | --- | --- |")
    for kind in KINDS:
        cells = [f"{statistics.median(r[kind][s] for r in rounds):,.0f}" for s in (1, 32)]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
