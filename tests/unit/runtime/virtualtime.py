"""An event loop whose clock is virtual: when nothing is ready, the clock jumps to the next
timer instead of waiting for it. Schedulers tested on it take no real time, and what the tests
assert is their schedule, never the speed of the machine that runs them."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import TypeVar

T = TypeVar("T")


class VirtualClock(selectors.DefaultSelector):
    """A selector that never blocks: asked to wait for the next timer, it moves the clock."""

    now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("every task waits and no timer is set: the batcher is stuck")
        self.now += timeout
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._clock = VirtualClock()
        super().__init__(self._clock)

    def time(self) -> float:
        return self._clock.now


def run_virtual(main: Coroutine[object, object, T]) -> T:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
