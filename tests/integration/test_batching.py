"""Adaptive batching through a real server: real batches, exact knobs, each caller its own result.

The batcher's schedule (which calls share a batch when) is tested on a virtual clock in
tests/unit/runtime/test_batcher.py; here calls come over the wire, from our client and from
stock grpcio.
"""

from __future__ import annotations

import asyncio

import anyio
import anyio.to_thread
import grpc
import pytest

from blazerpc import BlazeApp, ModelError, RpcError, Status
from blazerpc.schema.markers import Batching
from blazerpc.server import BlazeServer
from blazerpc.testing import serve_app

from .support import WAIT_S, Probe, RawReply, raw_call

pytestmark = pytest.mark.anyio

EXEC_S = 0.003
"""How long the batch function works: calls that come meanwhile queue for the next batch."""
FULL_ONLY = 59.0
"""A max_wait_s longer than any test waits: a batch starts only when it has max_size calls."""


def batch_app(config: Batching, batches: list[list[int]]) -> BlazeApp:
    app = BlazeApp()

    @app.model("double", batch=config)
    async def double(x: list[int]) -> list[int | Exception]:
        batches.append(list(x))
        await asyncio.sleep(EXEC_S)
        return [
            ModelError(Status.INVALID_ARGUMENT, f"{v} is poison") if v < 0 else v * 2 for v in x
        ]

    return app


async def test_concurrent_calls_form_full_batches_and_each_caller_gets_its_own_result() -> None:
    batches: list[list[int]] = []
    app = batch_app(Batching(max_size=16, max_wait_s=FULL_ONLY), batches)
    async with serve_app(app) as client:
        results = await asyncio.gather(*(client.predict("double", x=i) for i in range(64)))
    assert results == [2 * i for i in range(64)]
    assert [len(batch) for batch in batches] == [16, 16, 16, 16]  # real batches, at the cap
    assert sorted(x for batch in batches for x in batch) == list(range(64))


async def test_a_lone_call_on_an_idle_model_runs_at_once() -> None:
    batches: list[list[int]] = []
    app = batch_app(Batching(max_size=16), batches)
    async with serve_app(app) as client:
        assert await client.predict("double", x=1) == 2
        assert await asyncio.gather(client.predict("double", x=2), client.predict("double", x=3))
    assert batches[0] == [1]
    assert sorted(batches[1:]) == [[2], [3]]  # the first of 2 and 3 did not wait for the other


async def test_one_poisoned_item_fails_alone() -> None:
    batches: list[list[int]] = []
    app = batch_app(Batching(max_size=3, max_wait_s=FULL_ONLY), batches)
    async with serve_app(app) as client:
        outcomes = await asyncio.gather(
            *(client.predict("double", x=v) for v in (1, -5, 3)), return_exceptions=True
        )
    assert [sorted(batch) for batch in batches] == [[-5, 1, 3]]  # one batch held all three
    assert outcomes[0] == 2 and outcomes[2] == 6
    assert isinstance(outcomes[1], RpcError)
    assert outcomes[1].status is Status.INVALID_ARGUMENT
    assert outcomes[1].message == "-5 is poison"


async def test_a_wrong_result_length_fails_that_batch_and_the_batcher_goes_on() -> None:
    app = BlazeApp()

    @app.model("short", batch=Batching(max_size=3, max_wait_s=FULL_ONLY))
    def short(x: list[int]) -> list[int]:
        return x[:-1] if 13 in x else x  # the bug under test, in the batch that holds 13

    async with serve_app(app) as client:
        outcomes = await asyncio.gather(
            *(client.predict("short", x=x) for x in (13, 1, 2)), return_exceptions=True
        )
        for failure in outcomes:
            assert isinstance(failure, RpcError), outcomes
            assert failure.status is Status.INTERNAL
            assert "model 'short' returned an invalid result" in failure.message
            assert "returned 2 results for 3 calls" in failure.message
        assert await asyncio.gather(*(client.predict("short", x=x) for x in (4, 5, 6))) == [4, 5, 6]


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
        assert err.value.message == (
            f"model 'fragile' failed: ValueError: unlucky batch (request id {err.value.request_id})"
        )
        assert await client.predict("fragile", x=1) == 1


async def test_a_full_queue_is_resource_exhausted_while_others_succeed(probe: Probe) -> None:
    app = BlazeApp()

    @app.model("slow", batch=Batching(max_size=1, max_queue=2))
    def slow(x: list[int]) -> list[int]:
        probe.start()
        probe.wait_released()
        return x

    replies: dict[int, RawReply] = {}
    answered = anyio.Event()
    async with BlazeServer(app, port=0) as server:

        async def call(value: int) -> None:
            path = "/blazerpc.InferenceService/PredictSlow"
            replies[value] = await raw_call(server.port, path, b"\x08" + bytes([value]))
            answered.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(call, 1)
            await probe.wait_started()  # 1 runs and holds the model; the queue is empty
            for value in (2, 3, 4):  # two of them queue, the queue is full, one is refused
                tasks.start_soon(call, value)
            with anyio.fail_after(WAIT_S):
                await answered.wait()
            (refused,) = replies.values()  # at once: the others still wait for the model
            probe.release()
    assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Batching.max_queue" in refused.details
    served = {value: reply for value, reply in replies.items() if reply is not refused}
    assert len(served) == 3 and 1 in served
    for value, reply in served.items():
        assert (reply.code, reply.messages) == (grpc.StatusCode.OK, [b"\x08" + bytes([value])])


async def test_sixty_four_stock_grpcio_calls_share_batches() -> None:
    batches: list[list[int]] = []
    app = batch_app(Batching(max_size=32, max_wait_s=FULL_ONLY), batches)
    async with BlazeServer(app, port=0) as server:

        def call_all() -> list[bytes]:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                double = channel.unary_unary("/blazerpc.InferenceService/PredictDouble")
                futures = [double.future(b"\x08" + bytes([i]), timeout=WAIT_S) for i in range(64)]
                return [future.result() for future in futures]

        replies = await anyio.to_thread.run_sync(call_all)
        stats = server.batch_stats["double"]
    assert replies == [b"\x08" + bytes([2 * i]) if i else b"" for i in range(64)]
    assert (stats.items, stats.batches, dict(stats.sizes)) == (64, 2, {32: 2})
    assert sorted(x for batch in batches for x in batch) == list(range(64))
