"""Batcher: batches form as the knobs say, each caller gets its own result, dead calls never run.

Every test runs on an event loop whose clock is virtual (`_VirtualClock`): when nothing is ready,
the clock jumps to the next timer instead of waiting for it. The model "works" for EXEC_S and
callers arrive at chosen moments, yet the tests take no real time, and what they assert (which
calls shared a batch, what happened before what) is the batcher's schedule, never the speed of
the machine that runs them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from blazerpc import BlazeApp, ModelError, Status
from blazerpc.errors import DeadlineExceededError
from blazerpc.runtime.batcher import Batcher
from blazerpc.schema.markers import Batching

from .virtualtime import run_virtual as _run

EXEC_S = 0.003
"""How long the batch function works, whatever the batch size, on the virtual clock."""
ROUNDING_S = 1e-9
"""Float rounding in sums of virtual-clock readings; no real time is involved."""
T = TypeVar("T")


@dataclass
class Recorder:
    """What the batcher did, in order: each batch as it was formed, and the calls in it."""

    batches: list[list[int]] = field(default_factory=list)
    formed_at: list[float] = field(default_factory=list)
    log: list[tuple[str, int]] = field(default_factory=list)
    """("formed", batch number) and ("cancel", call index), in the order they happened."""

    def on_batch(self, model: str, size: int, waits_s: list[float]) -> None:
        self.log.append(("formed", len(self.formed_at)))
        self.formed_at.append(asyncio.get_running_loop().time())


def _batcher(config: Batching, recorder: Recorder) -> Batcher:
    app = BlazeApp()

    @app.model("double", batch=config)
    async def double(x: list[int]) -> list[int | Exception]:
        recorder.batches.append(list(x))  # in the order the batches were formed
        await asyncio.sleep(EXEC_S)
        return [
            ModelError(Status.INVALID_ARGUMENT, f"{v} is poison") if v < 0 else v * 2 for v in x
        ]

    return Batcher(app.registry["double"], config, on_batch=recorder.on_batch)


async def _arrive(batcher: Batcher, x: int, at_s: float) -> object:
    await asyncio.sleep(at_s)
    return await batcher.submit({"x": x})


async def _arrivals(config: Batching, *calls: tuple[int, float]) -> Recorder:
    """Each (x, arrival time) submitted at its moment; the batches the function saw."""
    recorder = Recorder()
    batcher = _batcher(config, recorder)
    results = await asyncio.gather(*(_arrive(batcher, x, at_s) for x, at_s in calls))
    await batcher.close()
    assert results == [2 * x for x, _ in calls]
    return recorder


def test_a_lone_call_on_an_idle_model_runs_at_once() -> None:
    recorder = _run(_arrivals(Batching(max_size=16), (1, 0.0), (2, 0.001)))
    assert recorder.batches == [[1], [2]]  # 1 did not wait for 2, which came while it ran


def test_calls_that_come_while_a_batch_runs_form_the_next_batch() -> None:
    calls = [(0, 0.0), (1, 0.001), (2, 0.0015), (3, 0.002), (4, EXEC_S + 0.001)]
    recorder = _run(_arrivals(Batching(max_size=16), *calls))
    assert recorder.batches == [[0], [1, 2, 3], [4]]


def test_max_size_caps_a_batch_and_the_rest_form_the_next() -> None:
    calls = [(x, 0.001 + x / 10_000) for x in range(1, 6)]  # in order, while 0 runs
    recorder = _run(_arrivals(Batching(max_size=2), (0, 0.0), *calls))
    assert recorder.batches == [[0], [1, 2], [3, 4], [5]]


def test_max_wait_s_holds_a_call_for_company_and_no_longer() -> None:
    calls = [(1, 0.0), (2, 0.004), (3, 0.006), (4, 0.020)]
    recorder = _run(_arrivals(Batching(max_size=16, max_wait_s=0.005), *calls))
    assert recorder.batches == [[1, 2], [3], [4]]  # 3 came after 1's wait was over: 1 had gone


def test_max_concurrent_runs_batches_side_by_side() -> None:
    calls = [(0, 0.0), (1, 0.001), (2, 0.0015), (3, 0.002)]
    recorder = _run(_arrivals(Batching(max_size=16, max_concurrent=2), *calls))
    assert recorder.batches == [[0], [1], [2, 3]]  # 1 took the second slot alone, at once


def test_one_poisoned_item_fails_alone() -> None:
    async def main() -> list[object]:
        batcher = _batcher(Batching(max_size=8), Recorder())
        return await asyncio.gather(
            *(_arrive(batcher, x, 0.0) for x in (1, -5, 3)), return_exceptions=True
        )

    ok, poisoned, also_ok = _run(main())
    assert (ok, also_ok) == (2, 6)
    assert isinstance(poisoned, ModelError) and str(poisoned) == "-5 is poison"


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


@settings(max_examples=200, deadline=None)
@given(scenario=calls, config=configs)
def test_batching_properties(scenario: list[Call], config: Batching) -> None:
    """Random arrivals, cancellations and deadlines: the cap holds, results go to their
    callers, dead calls are never computed, and nobody waits longer than it must."""
    _run(_check_properties(scenario, config))


async def _check_properties(scenario: list[Call], config: Batching) -> None:
    recorder = Recorder()
    batcher = _batcher(config, recorder)
    loop = asyncio.get_running_loop()
    arrived: dict[int, float] = {}
    deadlines: dict[int, float] = {}
    outcomes: dict[int, object] = {}

    async def one(index: int, call: Call) -> None:
        await asyncio.sleep(call.delay_s)
        arrived[index] = loop.time()
        if call.deadline_s is not None:
            deadlines[index] = arrived[index] + call.deadline_s
        task = asyncio.ensure_future(batcher.submit({"x": index}, deadlines.get(index)))
        if call.cancel_after_s is not None:
            loop.call_later(call.cancel_after_s, _cancel, task, recorder, index)
        try:
            outcomes[index] = await task
        except asyncio.CancelledError:
            outcomes[index] = "cancelled"
        except DeadlineExceededError:
            outcomes[index] = "expired"

    await asyncio.gather(*(one(i, call) for i, call in enumerate(scenario)))
    await batcher.close()

    computed = {index: number for number, batch in enumerate(recorder.batches) for index in batch}
    assert all(len(batch) <= config.max_size for batch in recorder.batches)
    assert sum(len(batch) for batch in recorder.batches) == len(computed)  # each at most once
    for index, outcome in outcomes.items():
        if outcome == "expired":
            assert index not in computed
        elif outcome != "cancelled":
            assert outcome == 2 * index  # exactly its own result
    for kind, index in recorder.log:
        if kind == "cancel" and index in computed:  # its batch was formed before the cancel
            assert recorder.log.index(("formed", computed[index])) < recorder.log.index(
                ("cancel", index)
            )
    for index, number in computed.items():
        formed_at = recorder.formed_at[number]
        if index in deadlines:
            assert formed_at < deadlines[index]  # alive when its batch was formed
        assert formed_at <= _latest_start(arrived[index], formed_at, config, recorder)


def _latest_start(arrived: float, formed_at: float, config: Batching, recorder: Recorder) -> float:
    """When a call's batch must have formed at the latest: once its wait for company is over and
    the batches that held the model (running when it came, or formed after) have run."""
    running = sum(1 for at in recorder.formed_at if at < arrived < at + EXEC_S + ROUNDING_S)
    ahead = sum(1 for at in recorder.formed_at if arrived <= at < formed_at)
    return arrived + config.max_wait_s + (running + ahead) * EXEC_S + ROUNDING_S


def _cancel(task: asyncio.Future[object], recorder: Recorder, index: int) -> None:
    if not task.done():
        recorder.log.append(("cancel", index))
        task.cancel()
