"""`@app.model(..., max_concurrent=N)`: at most N calls of a model run at once, the others wait
their turn and are served, for sync and async models alike."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from blazerpc import BlazeApp
from blazerpc.testing import serve_app

pytestmark = pytest.mark.anyio


class _Gauge:
    """How many calls run at once, and the most seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0

    def enter(self) -> None:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)

    def leave(self) -> None:
        with self._lock:
            self.running -= 1


def _app(gauge: _Gauge, *, max_concurrent: int | None) -> BlazeApp:
    app = BlazeApp()

    @app.model("work", max_concurrent=max_concurrent)
    def work(n: int) -> int:
        gauge.enter()
        time.sleep(0.05)  # long enough that the calls overlap unless they are held back
        gauge.leave()
        return n

    @app.model("await-work", max_concurrent=max_concurrent)
    async def await_work(n: int) -> int:
        gauge.enter()
        await asyncio.sleep(0.05)
        gauge.leave()
        return n

    return app


@pytest.mark.parametrize("model", ["work", "await-work"], ids=["sync", "async"])
async def test_at_most_max_concurrent_calls_of_a_model_run_at_once(model: str) -> None:
    gauge = _Gauge()
    async with serve_app(_app(gauge, max_concurrent=2)) as client:
        results = await asyncio.gather(*(client.predict(model, n=n) for n in range(8)))
    assert sorted(results) == list(range(8))
    assert gauge.most == 2


async def test_without_max_concurrent_the_calls_overlap() -> None:
    gauge = _Gauge()
    async with serve_app(_app(gauge, max_concurrent=None)) as client:
        await asyncio.gather(*(client.predict("await-work", n=n) for n in range(8)))
    assert gauge.most == 8


async def test_a_sync_model_runs_one_call_per_cpu_by_default() -> None:
    gauge = _Gauge()
    async with serve_app(_app(gauge, max_concurrent=None)) as client:
        await asyncio.gather(*(client.predict("work", n=n) for n in range(8)))
    assert gauge.most == min(8, os.cpu_count() or 1)
