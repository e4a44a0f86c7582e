"""The continuous batcher's rules, without sockets: who steps together, in what order, and
that every stream is released once, after its last step."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blazerpc import Skip, Step, Stop
from blazerpc.runtime.continuous import ContinuousBatcher

from .virtualtime import run_virtual

pytestmark = pytest.mark.anyio


def _counting(released: list[int], sizes: list[int] | None = None) -> ContinuousBatcher:
    """A step that yields n, n+1, ... until `count` values, then Stop."""

    async def step(start: list[int], count: list[int], steps: list[Step]) -> list[Any]:
        await asyncio.sleep(0.001)
        out: list[Any] = []
        for first, total, slot in zip(start, count, steps, strict=True):
            if slot.is_first:
                slot.state = first
            if slot.index >= total:
                out.append(Stop)
            else:
                out.append(slot.state + slot.index)
        return out

    return ContinuousBatcher(
        step,
        ["start", "count"],
        "steps",
        is_async=True,
        max_size=4,
        release=lambda slot: released.append(slot.state),
    )


async def _collect(batcher: ContinuousBatcher, start: int, count: int) -> list[int]:
    return [value async for value in batcher.stream({"start": start, "count": count})]


async def test_streams_share_steps_get_their_own_values_and_are_released_once() -> None:
    released: list[int] = []
    batcher = _counting(released)
    results = await asyncio.gather(*(_collect(batcher, 100 * i, 3 + i) for i in range(10)))
    assert results == [[100 * i + k for k in range(3 + i)] for i in range(10)]
    assert max(batcher.steps) == 4  # max_size, never more
    assert max(batcher.steps) > 1
    assert sorted(released) == [100 * i for i in range(10)]


async def test_a_stream_whose_caller_leaves_is_released_after_the_step() -> None:
    released: list[int] = []
    batcher = _counting(released)
    stream = batcher.stream({"start": 7, "count": 1000})
    assert await anext(stream) == 7
    await stream.aclose()  # the caller left
    others = await _collect(batcher, 1, 2)
    assert others == [1, 2]
    assert sorted(released) == [1, 7]


async def test_an_exception_entry_fails_one_stream_and_a_raising_step_fails_all() -> None:
    async def step(n: list[int], steps: list[Step]) -> list[Any]:
        if any(value == 13 for value in n):
            raise RuntimeError("the step failed")
        return [ValueError("bad") if value < 0 else Stop(value) for value in n]

    batcher = ContinuousBatcher(step, ["n"], "steps", is_async=True)
    assert [v async for v in batcher.stream({"n": 5})] == [5]
    with pytest.raises(ValueError, match="bad"):
        [v async for v in batcher.stream({"n": -1})]
    with pytest.raises(RuntimeError, match="the step failed"):
        [v async for v in batcher.stream({"n": 13})]
    assert [v async for v in batcher.stream({"n": 6})] == [6]  # it goes on serving


async def test_a_slow_reader_sits_out_steps_and_never_stalls_the_others() -> None:
    released: list[int] = []
    batcher = _counting(released)
    idle = batcher.stream({"start": 1000, "count": 100})
    assert await anext(idle) == 1000  # then nobody reads it for a while
    busy = await _collect(batcher, 0, 50)
    assert busy == list(range(50))  # 50 steps ran while the idle stream's buffer was full
    rest = [value async for value in idle]
    assert rest == list(range(1001, 1100))  # nothing lost, in order, state kept
    assert sorted(released) == [0, 1000]


@dataclass(frozen=True)
class Arrival:
    at: float
    length: int
    reads: int | None
    """Items read before the caller leaves; None: it reads to the end."""


arrivals = st.lists(
    st.builds(
        Arrival,
        at=st.floats(min_value=0, max_value=0.05),
        length=st.integers(min_value=0, max_value=12),
        reads=st.none() | st.integers(min_value=0, max_value=8),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(scenario=arrivals, max_size=st.integers(min_value=1, max_value=5))
def test_scheduling_properties(scenario: list[Arrival], max_size: int) -> None:
    """Steps never exceed max_size; streams join in arrival order; every caller that stays
    gets exactly its values; every stream is released once, between steps, and never steps
    again after."""
    steps: list[list[int]] = []
    released: list[int] = []
    arrived: list[int] = []
    in_step = False

    async def step(who: list[int], length: list[int], slots: list[Step]) -> list[Any]:
        nonlocal in_step
        in_step = True
        steps.append(list(who))
        await asyncio.sleep(0.003)
        in_step = False
        out: list[Any] = []
        for stream, total, slot in zip(who, length, slots, strict=True):
            if slot.is_first:
                slot.state = stream
            out.append(f"{stream}:{slot.index}" if slot.index < total else Stop())
        return out

    def release(slot: Step) -> None:
        assert not in_step, "release ran during a step"
        released.append(slot.state)

    async def main() -> list[list[str]]:
        batcher = ContinuousBatcher(
            step, ["who", "length"], "slots", is_async=True, max_size=max_size, release=release
        )

        async def caller(index: int, arrival: Arrival) -> list[str]:
            await asyncio.sleep(arrival.at)
            got: list[str] = []
            stream = batcher.stream({"who": index, "length": arrival.length})
            if arrival.reads == 0:  # it leaves before asking for anything: never joins
                await stream.aclose()
                return got
            arrived.append(index)  # the stream's first step into the batcher comes next
            async for value in stream:
                got.append(value)
                if arrival.reads is not None and len(got) >= arrival.reads:
                    break
            await stream.aclose()
            return got

        got = await asyncio.gather(*(caller(i, a) for i, a in enumerate(scenario)))
        await asyncio.sleep(0.1)  # the last step returns and its streams are released
        return got

    got = run_virtual(main())
    assert all(1 <= len(members) <= max_size for members in steps)
    for index, (arrival, values) in enumerate(zip(scenario, got, strict=True)):
        expected = [f"{index}:{k}" for k in range(arrival.length)]
        if arrival.reads is None:
            assert values == expected
        else:
            assert values == expected[: arrival.reads]
    joined = list(dict.fromkeys(m for members in steps for m in members))
    assert joined == [i for i in arrived if i in joined]  # in arrival order
    stepped = {m for members in steps for m in members}
    assert sorted(released) == sorted(stepped)  # every stream that joined left once
    for stream in released:
        last = max(n for n, members in enumerate(steps) if stream in members)
        assert all(stream not in members for members in steps[last + 1 :])


async def test_a_paused_stream_keeps_its_slot_so_max_size_counts_it() -> None:
    released: list[int] = []
    seen: list[list[int]] = []

    async def step(start: list[int], count: list[int], steps: list[Step]) -> list[Any]:
        seen.append(list(start))
        await asyncio.sleep(0.001)
        return [
            s + slot.index if slot.index < n else Stop()
            for s, n, slot in zip(start, count, steps, strict=True)
        ]

    batcher = ContinuousBatcher(
        step,
        ["start", "count"],
        "steps",
        is_async=True,
        max_size=2,
        release=lambda slot: released.append(slot.index),
    )
    paused = batcher.stream({"start": 100, "count": 50})
    assert await anext(paused) == 100  # then unread: its buffer fills and it sits out
    first, third = await asyncio.gather(_collect(batcher, 200, 10), _collect(batcher, 300, 3))
    assert (first, third) == (list(range(200, 210)), [300, 301, 302])
    with_first = [n for n, members in enumerate(seen) if 200 in members]
    with_third = [n for n, members in enumerate(seen) if 300 in members]
    assert max(with_first) < min(with_third)  # the paused stream kept the other slot
    assert released == [10, 3]  # the two that ended; the paused one still holds its slot
    await paused.aclose()


async def test_a_skip_entry_sends_nothing_and_keeps_the_stream() -> None:
    async def step(n: list[int], steps: list[Step]) -> list[Any]:
        out: list[Any] = []
        for total, slot in zip(n, steps, strict=True):
            slot.state = (slot.state or 0) + 1  # steps this stream took part in
            if slot.state > total:
                out.append(Stop())
            else:
                out.append(Skip() if slot.state % 2 else slot.state)
        return out

    batcher = ContinuousBatcher(step, ["n"], "steps", is_async=True)
    assert [v async for v in batcher.stream({"n": 6})] == [2, 4, 6]
