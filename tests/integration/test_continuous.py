"""Continuous batching through a real server: streams share steps, each gets its own values in
order, every stream is released once (cancelled ones too), and the wire schema is the
unbatched model's."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets.asyncio.client

from blazerpc import BlazeApp, BlazeClient, BlazeServer, Continuous, DefinitionError, Step, Stop
from blazerpc.wire.proto_text import render_proto

from .support import serve_http, wait_until

pytestmark = pytest.mark.anyio


def _app(sizes: list[int], released: list[str]) -> BlazeApp:
    app = BlazeApp()

    @app.model(
        "count",
        streaming=True,
        batch=Continuous(max_size=8, release=lambda step: released.append(step.state)),
    )
    async def count(name: list[str], n: list[int], steps: list[Step]) -> list[str | Stop]:
        """One token per active stream per step, like a decoder."""
        sizes.append(len(steps))
        await asyncio.sleep(0.002)  # a "GPU" step
        out: list[str | Stop] = []
        for who, total, step in zip(name, n, steps, strict=True):
            if step.is_first:
                step.state = who
            out.append(f"{who}:{step.index}" if step.index < total else Stop())
        return out

    return app


async def test_concurrent_streams_share_steps_and_are_each_released_once() -> None:
    sizes: list[int] = []
    released: list[str] = []
    app = _app(sizes, released)
    async with serve_http(app) as served:

        async def one(i: int) -> list[str]:
            return [item async for item in served.client.stream("count", name=f"s{i}", n=i % 7 + 1)]

        results = await asyncio.gather(*(one(i) for i in range(32)))
        over_sse = await served.http.post("/models/count", json={"name": "h", "n": 2})
        async with BlazeClient(port=served.server.port, app=app, timeout=5) as leaving:
            stream = leaving.stream("count", name="gone", n=10_000)
            assert await anext(stream) == "gone:0"
            await stream.aclose()  # the caller leaves mid-stream
        await wait_until(lambda: "gone" in released, "the stream that left was released")
    assert results == [[f"s{i}:{k}" for k in range(i % 7 + 1)] for i in range(32)]
    assert max(sizes) > 1 and max(sizes) <= 8
    assert over_sse.text.count("data: ") == 3  # two items and the end event
    assert sorted(released) == sorted([f"s{i}" for i in range(32)] + ["h", "gone"])


def test_the_wire_schema_is_the_unbatched_models() -> None:
    continuous = _app([], [])
    plain = BlazeApp()

    @plain.model("count", streaming=True)
    async def count(name: str, n: int) -> AsyncIterator[str]:
        """One token per active stream per step, like a decoder."""
        yield name

    assert render_proto(continuous.schema) == render_proto(plain.schema)


def test_mistakes_in_a_step_function_fail_at_import() -> None:
    app = BlazeApp()

    def step(n: list[int], steps: list[Step]) -> list[int]:
        return n

    def no_steps(n: list[int]) -> list[int]:
        return n

    def generator(n: list[int], steps: list[Step]) -> Iterator[list[int]]:
        yield n

    def client_stream(n: Iterator[int], steps: list[Step]) -> list[int]:
        return []

    def stray(n: int, steps: list[Step]) -> int:
        return n

    cases: list[tuple[Any, dict[str, Any], str]] = [
        (step, {"batch": Continuous()}, "streaming=True is not given"),
        (
            no_steps,
            {"batch": Continuous(), "streaming": True},
            "one parameter annotated list[Step]",
        ),
        (generator, {"batch": Continuous(), "streaming": True}, "it does not yield"),
        (client_stream, {"batch": Continuous(), "streaming": True}, "a stream of requests"),
        (stray, {}, "which only a batch=Continuous(...) step function receives"),
        (
            step,
            {"batch": Continuous(), "streaming": True, "max_concurrent": 2},
            "Continuous(max_size=N)",
        ),
    ]
    for index, (function, options, expected) in enumerate(cases):
        with pytest.raises(DefinitionError) as err:
            app.model(f"m{index}", **options)(function)
        assert expected in str(err.value), (index, str(err.value))
    with pytest.raises(DefinitionError, match="max_size is a whole number of at least 1"):
        Continuous(max_size=0)


async def test_a_drain_lets_the_active_streams_finish_and_releases_them() -> None:
    sizes: list[int] = []
    released: list[str] = []
    app = _app(sizes, released)
    server = BlazeServer(app, port=0)
    await server.start()
    async with BlazeClient(port=server.port, app=app, timeout=10) as client:

        async def one(i: int) -> list[str]:
            return [item async for item in client.stream("count", name=f"d{i}", n=40)]

        streams = [asyncio.ensure_future(one(i)) for i in range(3)]
        await wait_until(lambda: len(sizes) > 3, "the streams are stepping")
        await server.drain(10)
        results = await asyncio.gather(*streams)
    assert results == [[f"d{i}:{k}" for k in range(40)] for i in range(3)]
    assert sorted(released) == ["d0", "d1", "d2"]


async def test_a_sync_step_runs_in_a_thread_and_serves_every_transport() -> None:
    app = BlazeApp()
    threads: set[str] = set()

    @app.model("echo-words", streaming=True, batch=Continuous(max_size=4), openai="completions")
    def echo_words(prompt: list[str], steps: list[Step]) -> list[str | Stop]:
        threads.add(threading.current_thread().name)
        out: list[str | Stop] = []
        for words, step in zip(prompt, steps, strict=True):
            split = words.split()
            out.append(split[step.index] if step.index < len(split) else Stop())
        return out

    async with serve_http(app) as served:
        over_grpc = [w async for w in served.client.stream("echo-words", prompt="a b c")]
        sse = await served.http.post("/models/echo-words", json={"prompt": "d e"})
        oip = await served.http.post(
            "/v2/models/echo-words/generate_stream", json={"prompt": "f g"}
        )
        openai = await served.http.post(
            "/v1/completions", json={"model": "echo-words", "prompt": "h i"}
        )
        url = f"ws://127.0.0.1:{served.server.http_port}/models/echo-words/ws"
        async with websockets.asyncio.client.connect(url) as socket:
            await socket.send(json.dumps({"prompt": "j k"}))
            over_ws = [json.loads(await socket.recv())["result"] for _ in range(2)]
    assert over_grpc == ["a", "b", "c"]
    assert sse.text.count('"result":') == 2
    assert [line for line in oip.text.splitlines() if line.startswith("data:")] == [
        'data: {"model_name":"echo-words","model_version":"1","result":"f"}',
        'data: {"model_name":"echo-words","model_version":"1","result":"g"}',
    ]
    assert openai.json()["choices"][0]["text"] == "hi"
    assert over_ws == ["j", "k"]
    assert threading.main_thread().name not in threads  # a worker thread, not the loop's
