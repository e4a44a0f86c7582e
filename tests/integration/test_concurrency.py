"""`@app.model(..., max_concurrent=N)`: at most N calls of a model run at once, the others wait
their turn and are served, for sync and async models alike."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from blazerpc import BlazeApp, BlazeClient, BlazeServer
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


def test_a_server_started_on_a_second_event_loop_still_bounds_its_calls() -> None:
    gauge = _Gauge()
    app = _app(gauge, max_concurrent=1)
    server = BlazeServer(app, port=0)

    async def calls() -> list[int]:
        async with server, BlazeClient(port=server.port, app=app, timeout=10) as client:
            return list(await asyncio.gather(*(client.predict("work", n=n) for n in range(4))))

    assert asyncio.run(calls()) == [0, 1, 2, 3]
    assert asyncio.run(calls()) == [0, 1, 2, 3]
    assert gauge.most == 1


def _totals() -> BlazeApp:
    app = BlazeApp()

    @app.model("total")
    def total(values: Iterator[int]) -> int:
        return sum(values)

    return app


async def test_slow_client_streams_do_not_hold_back_a_sync_models_other_calls() -> None:
    held = asyncio.Event()

    async def slow() -> AsyncIterator[int]:
        yield 1
        await held.wait()  # the client goes quiet, its stream open

    async with serve_app(_totals()) as client:
        slow_calls = [
            asyncio.ensure_future(client.send_stream("total", slow()))
            for _ in range((os.cpu_count() or 1) + 1)
        ]
        await asyncio.sleep(0.2)  # the slow streams are open and have sent their first item
        with anyio.fail_after(5):
            assert await client.send_stream("total", [1, 2, 3]) == 6
        held.set()
        assert await asyncio.gather(*slow_calls) == [1] * len(slow_calls)
