"""The models of the Ray tests: each tells the test what happened in its replica.

Replicas run in other processes, so they report through files in the directory named by
BLAZERPC_TEST_RAY_DIR (set before the cluster starts; Ray's processes inherit it): the
lifespan hook writes one line per replica start and stop, a stream writes how it ended.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from blazerpc import (
    Batching,
    BlazeApp,
    Context,
    Continuous,
    ModelError,
    Placement,
    Status,
    Step,
    Stop,
)
from blazerpc.ray import current_model

app = BlazeApp()
SMALL = Placement(num_cpus=0.1)


def _report(name: str, line: str) -> None:
    folder = os.environ.get("BLAZERPC_TEST_RAY_DIR")
    if folder:
        with open(Path(folder) / name, "a", encoding="utf-8") as file:
            file.write(line + "\n")


@app.lifespan
async def replica_life() -> AsyncIterator[None]:
    """One `start MODEL PID` line when a replica starts, `stop MODEL PID` when it stops."""
    _report("lifespan", f"start {current_model()} {os.getpid()}")
    yield
    _report("lifespan", f"stop {current_model()} {os.getpid()}")


@app.model("whoami", placement=Placement(replicas=2, num_cpus=0.1))
async def whoami() -> int:
    """The replica's pid."""
    return os.getpid()


@app.model("tokens", streaming=True, placement=SMALL)
async def tokens(prompt: str, max_tokens: int = 32) -> AsyncIterator[str]:
    for word in prompt.split()[:max_tokens]:
        yield word


@app.model("total", placement=SMALL)
async def total(numbers: AsyncIterator[int]) -> int:
    return sum([n async for n in numbers])


@app.model("running", streaming=True, placement=SMALL)
async def running(numbers: AsyncIterator[int]) -> AsyncIterator[int]:
    """A running total: state kept per stream, in the replica serving it."""
    sum_so_far = 0
    async for number in numbers:
        sum_so_far += number
        yield sum_so_far


@app.model("sizes", batch=Batching(max_size=8, max_wait_s=0.2), placement=SMALL)
async def sizes(values: list[int]) -> list[int]:
    """Each call learns the size of the batch it ran in."""
    return [len(values)] * len(values)


@app.model("endless", streaming=True, placement=SMALL)
async def endless(tag: str) -> AsyncIterator[int]:
    """Counts until its caller leaves; then reports how its generator ended."""
    count = 0
    try:
        while True:
            yield count
            count += 1
            await asyncio.sleep(0.01)
    except BaseException as error:
        _report(f"ended-{tag}", type(error).__name__)
        raise


@app.model("caller", placement=SMALL)
async def caller(ctx: Context) -> str:
    """What the replica knows of its caller: the request id, a header, a deadline."""
    remaining = ctx.time_remaining
    deadline = "none" if remaining is None else "set"
    return f"{ctx.request_id} {ctx.metadata.get('x-team', '-')} {deadline}"


@app.model("picky", placement=SMALL)
async def picky(word: str) -> str:
    """Refuses what is not lower case; crashes on 'boom' (a bug, to see INTERNAL)."""
    if word == "boom":
        raise ValueError("the model tripped on boom")
    if word != word.lower():
        raise ModelError(Status.INVALID_ARGUMENT, f"{word!r} is not lower case.")
    return word


@app.model("steps", streaming=True, batch=Continuous(max_size=8), placement=SMALL)
async def steps(name: list[str], n: list[int], step: list[Step]) -> list[str | Stop]:
    """Continuous batching in the replica: one token per active stream per step, each token
    saying how many streams shared its step."""
    await asyncio.sleep(0.01)  # a "GPU" step: streams that arrive meanwhile join the next
    out: list[str | Stop] = []
    for who, total, current in zip(name, n, step, strict=True):
        out.append(f"{who}:{current.index}:{len(step)}" if current.index < total else Stop())
    return out
