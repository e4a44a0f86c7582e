"""Adaptive batching: real batches, exact knobs, and every caller gets exactly its own result."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import anyio
import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blazerpc import BlazeApp, ModelError, RpcError, Status
from blazerpc.errors import DeadlineExceededError
from blazerpc.runtime.batcher import Batcher
from blazerpc.schema.markers import Batching
from blazerpc.server import BlazeServer
from blazerpc.testing import serve_app

EXEC_S = 0.003
FORMING_S = 0.01
"""From a batch being formed (dead calls dropped) to its function starting: one loop turn,
which a busy 2-core machine (a CI run next to other work) can stretch to several ms."""


@dataclass
class Recorder:
    """What the batch function saw, in order, with times on the event loop's clock."""

    batches: list[list[int]] = field(default_factory=list)
    started: list[float] = field(default_factory=list)


def batch_app(config: Batching, recorder: Recorder) -> BlazeApp:
    app = BlazeApp()

    @app.model("double", batch=config)
    async def double(x: list[int]) -> list[int | Exception]:
        recorder.batches.append(list(x))
        recorder.started.append(asyncio.get_running_loop().time())
        await asyncio.sleep(EXEC_S)
        return [
            ModelError(Status.INVALID_ARGUMENT, f"{v} is poison") if v < 0 else v * 2 for v in x
        ]

    return app


@pytest.mark.anyio
async def test_concurrent_calls_form_batches_and_each_caller_gets_its_own_result() -> None:
    recorder = Recorder()
    app = batch_app(Batching(max_size=16), recorder)
    async with serve_app(app) as client:
        results = await asyncio.gather(*(client.predict("double", x=i) for i in range(64)))
    assert results == [2 * i for i in range(64)]
    assert 1 < max(len(b) for b in recorder.batches) <= 16  # real batches, never over the cap
    assert len(recorder.batches) < 64


@pytest.mark.anyio
async def test_a_lone_call_on_an_idle_model_runs_at_once() -> None:
    recorder = Recorder()
    app = batch_app(Batching(max_size=16, max_wait_s=0.0), recorder)
    async with serve_app(app) as client:
        assert await client.predict("double", x=1) == 2
        started = time.perf_counter()
        assert await client.predict("double", x=2) == 4
        assert time.perf_counter() - started < 0.05  # no added wait (the model takes 3 ms)
    assert recorder.batches == [[1], [2]]


@pytest.mark.anyio
async def test_one_poisoned_item_fails_alone() -> None:
    recorder = Recorder()
    app = batch_app(Batching(max_size=8), recorder)
    async with serve_app(app) as client:
        outcomes = await asyncio.gather(
            *(client.predict("double", x=v) for v in (1, -5, 3)), return_exceptions=True
        )
    assert outcomes[0] == 2 and outcomes[2] == 6
    assert isinstance(outcomes[1], RpcError)
    assert outcomes[1].status is Status.INVALID_ARGUMENT
    assert outcomes[1].message == "-5 is poison"


@pytest.mark.anyio
async def test_a_wrong_result_length_fails_that_batch_and_the_batcher_goes_on() -> None:
    app = BlazeApp()

    @app.model("short", batch=Batching(max_size=4))
    def short(x: list[int]) -> list[int]:
        return x[:-1] if len(x) > 1 else x

    async with serve_app(app) as client:
        outcomes = await asyncio.gather(
            *(client.predict("short", x=i) for i in range(3)), return_exceptions=True
        )
        failures = [o for o in outcomes if isinstance(o, RpcError)]
        assert failures, outcomes
        assert failures[0].status is Status.INTERNAL
        assert "model 'short' returned an invalid result" in failures[0].message
        assert "results for" in failures[0].message
        assert await client.predict("short", x=7) == 7


@pytest.mark.anyio
async def test_a_raising_batch_fails_only_its_own_calls() -> None:
    app = BlazeApp()

    @app.model("fragile", batch=Batching(max_size=2))
    async def fragile(x: list[int]) -> list[int]:
        if 13 in x:
            raise ValueError("unlucky batch")
        await asyncio.sleep(EXEC_S)
        return x

    async with serve_app(app) as client:
        with pytest.raises(RpcError) as err:
            await client.predict("fragile", x=13)
        assert err.value.status is Status.INTERNAL
        assert err.value.message == "model 'fragile' failed: ValueError: unlucky batch"
        assert await client.predict("fragile", x=1) == 1


@pytest.mark.anyio
async def test_a_full_queue_is_resource_exhausted_while_others_succeed() -> None:
    app = BlazeApp()
    release = threading.Event()

    @app.model("slow", batch=Batching(max_size=1, max_queue=2))
    def slow(x: list[int]) -> list[int]:
        release.wait(5)
        return x

    async with BlazeServer(app, port=0) as server:

        def call(value: int) -> tuple[grpc.StatusCode, bytes]:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                try:
                    body = channel.unary_unary("/blazerpc.InferenceService/PredictSlow")(
                        b"\x08" + bytes([value]), timeout=10
                    )
                except grpc.RpcError as err:
                    return err.code(), (err.details() or "").encode()
                return grpc.StatusCode.OK, body

        async with anyio.create_task_group() as tasks:
            results: dict[int, tuple[grpc.StatusCode, bytes]] = {}

            async def run(value: int) -> None:
                results[value] = await anyio.to_thread.run_sync(call, value)

            for value in range(1, 4):  # one runs, two wait: the queue is full
                tasks.start_soon(run, value)
                await anyio.sleep(0.2)
            await run(4)  # refused at once, while the others are still waiting
            release.set()
    assert results[4][0] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert b"Batching.max_queue" in results[4][1]
    assert [results[v][0] for v in (1, 2, 3)] == [grpc.StatusCode.OK] * 3


@dataclass
class Call:
    value: int
    delay_s: float
    cancel_after_s: float | None
    deadline_s: float | None


calls = st.lists(
    st.builds(
        Call,
        value=st.integers(0, 10_000),
        delay_s=st.floats(0, 0.02),
        cancel_after_s=st.none() | st.floats(0, 0.02),
        deadline_s=st.none() | st.floats(0.001, 0.03),
    ),
    min_size=1,
    max_size=30,
)
configs = st.builds(
    Batching,
    max_size=st.integers(1, 8),
    max_wait_s=st.sampled_from([0.0, 0.002, 0.005]),
    max_queue=st.just(1024),
    max_concurrent=st.integers(1, 2),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=calls, config=configs)
def test_batching_properties(scenario: list[Call], config: Batching) -> None:
    """Random arrivals, cancellations and deadlines: the cap holds, results go to their
    callers, dead calls are never computed, and nobody waits longer than it must."""
    anyio.run(_check_properties, scenario, config)


async def _check_properties(scenario: list[Call], config: Batching) -> None:
    recorder = Recorder()
    model = batch_app(config, recorder).registry["double"]
    batcher = Batcher(model, config)
    loop = asyncio.get_running_loop()
    events: list[tuple[float, str, int]] = []
    outcomes: dict[int, object] = {}

    async def one(index: int, call: Call) -> None:
        await asyncio.sleep(call.delay_s)
        arrived = loop.time()
        events.append((arrived, "arrive", index))
        deadline = None if call.deadline_s is None else arrived + call.deadline_s
        task = asyncio.ensure_future(batcher.submit({"x": index}, deadline))
        if call.cancel_after_s is not None:
            loop.call_later(call.cancel_after_s, _cancel, task, events, index, loop)
        try:
            outcomes[index] = await task
        except asyncio.CancelledError:
            outcomes[index] = "cancelled"
        except DeadlineExceededError:
            outcomes[index] = "expired"

    await asyncio.gather(*(one(i, call) for i, call in enumerate(scenario)))
    await batcher.close()

    computed = [index for batch in recorder.batches for index in batch]
    assert all(len(batch) <= config.max_size for batch in recorder.batches)
    assert len(computed) == len(set(computed))
    for index, outcome in outcomes.items():
        if outcome == "expired":
            assert index not in computed
        elif outcome != "cancelled":
            assert outcome == 2 * index  # exactly its own result
    starts = dict(zip(map(tuple, recorder.batches), recorder.started, strict=True))
    batch_start = {i: starts[tuple(batch)] for batch in recorder.batches for i in batch}
    for when, kind, index in events:
        if kind == "cancel" and index in batch_start:
            assert batch_start[index] <= when + FORMING_S  # formed before the cancel, not after
    arrivals = {index: when for when, kind, index in events if kind == "arrive"}
    for index, started in batch_start.items():
        call = scenario[index]
        if call.deadline_s is not None:
            # alive when its batch formed; the function itself starts one loop turn later
            assert started < arrivals[index] + call.deadline_s + FORMING_S
        busy = sum(1 for s in recorder.started if arrivals[index] <= s < started)
        slack_s = 0.05  # event-loop and scheduling noise on a busy 2-core machine
        allowed = config.max_wait_s + (busy + 1) * (EXEC_S + slack_s)
        assert started - arrivals[index] <= allowed


def _cancel(
    task: asyncio.Future[object],
    events: list[tuple[float, str, int]],
    index: int,
    loop: asyncio.AbstractEventLoop,
) -> None:
    if not task.done():
        events.append((loop.time(), "cancel", index))
        task.cancel()


@pytest.mark.anyio
async def test_sixty_four_stock_grpcio_calls_share_batches() -> None:
    recorder = Recorder()
    app = batch_app(Batching(max_size=64), recorder)
    async with BlazeServer(app, port=0) as server:

        def call_all() -> list[bytes]:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                double = channel.unary_unary("/blazerpc.InferenceService/PredictDouble")
                futures = [double.future(b"\x08" + bytes([i]), timeout=10) for i in range(64)]
                return [future.result() for future in futures]

        replies = await anyio.to_thread.run_sync(call_all)
        stats = server.batch_stats["double"]
    assert replies == [b"\x08" + bytes([2 * i]) if i else b"" for i in range(64)]
    assert stats.items == 64
    assert stats.batches < 64
    assert max(stats.sizes) > 1
