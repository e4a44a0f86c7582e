"""Admission: which calls may start, and the calls still running; the server's side of a drain.

A call is admitted only while the server is SERVING and, for a stream, while fewer than
`max_streams` streams are open. Draining refuses new calls, waits up to a grace period for the
running ones, then ends what is left: their tasks are cancelled, so generators close at once.

A transport that hands over (gRPC: GOAWAY, then new streams refused unprocessed, which
clients retry elsewhere) delivers during a drain only the calls sent before its clients
knew: those are admitted until the grace period ends, so a rolling restart loses none.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

from blazerpc.errors import LimitError, UnavailableError
from blazerpc.schema.spec import ModelSpec, Shape

__all__ = ("Admission", "Phase")


class Phase(enum.Enum):
    """Where a server is in its life; only SERVING admits calls."""

    LOADING = "loading"
    SERVING = "serving"
    DRAINING = "draining"


class Admission:
    """Gatekeeper and register of running calls, shared by every handler of one server."""

    def __init__(self, max_streams: int) -> None:
        self.phase = Phase.LOADING
        self._max_streams = max_streams
        self._tasks: set[asyncio.Task[object]] = set()
        self._ended_by_drain: set[asyncio.Task[object]] = set()
        self._streams = 0
        self._idle: asyncio.Event | None = None
        self._ending = False
        """The grace period is over: nothing more is admitted."""
        self._unready: dict[str, str] = {}
        """Models that cannot take calls now, however the server is, and why."""

    @property
    def running(self) -> int:
        """Calls admitted and not yet finished."""
        return len(self._tasks)

    @property
    def is_ready(self) -> bool:
        """Whether calls are admitted: what every readiness check answers, on every route."""
        return self.phase is Phase.SERVING

    def is_model_ready(self, name: str) -> bool:
        """Whether calls of model `name` are admitted: a model's readiness check."""
        return self.is_ready and name not in self._unready

    def set_model_ready(self, name: str, ready: bool, reason: str = "") -> None:
        """Admit or refuse one model's calls (with UNAVAILABLE saying `reason`), for a model
        whose replicas live elsewhere and can all be down while this server is up."""
        if ready:
            self._unready.pop(name, None)
        else:
            self._unready[name] = reason or f"model {name!r} is not ready; retry in a moment."

    def admit(self, model: ModelSpec, *, handover: bool = False) -> asyncio.Task[object]:
        """Register the current task's call, or raise the reason it may not start.

        `handover`: the transport refuses new calls itself during a drain (see above). The
        call's task is its ticket: `release()` it when the call is over.
        """
        if self.phase is not Phase.SERVING and not (
            handover and self.phase is Phase.DRAINING and not self._ending
        ):
            raise UnavailableError(_REFUSALS[self.phase])
        if self._unready and model.name in self._unready:
            raise UnavailableError(self._unready[model.name])
        if model.shape is not Shape.UNARY:
            if self._streams >= self._max_streams:
                raise LimitError(
                    f"the server has {self._streams} streams open, its limit (max_streams); "
                    "retry with backoff, or on another replica."
                )
            self._streams += 1
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Admission.admit() runs inside a call's task.")
        self._tasks.add(task)
        return task

    def release(self, task: asyncio.Task[object], model: ModelSpec) -> None:
        """The call `admit()` registered for `model` is over."""
        self._tasks.discard(task)
        if self._ended_by_drain:
            self._ended_by_drain.discard(task)  # asked in the call's own except, before this
        if model.shape is not Shape.UNARY:
            self._streams -= 1
        if not self._tasks and self._idle is not None:
            self._idle.set()

    def is_ended_by_drain(self, task: asyncio.Task[object]) -> bool:
        """Whether the drain cancelled this call's task, past its grace period."""
        return task in self._ended_by_drain

    async def drain(self, grace: float, *, settled: Callable[[], bool] | None = None) -> int:
        """Refuse new calls, wait up to `grace` s for the running ones, end the rest.

        `settled()` says the transports' handover is over (no call can arrive any more); the
        drain waits for it too, so a call handed over late is served, not cut short.
        Returns how many calls were still running at the end of the grace period.
        """
        self.phase = Phase.DRAINING
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while (self._tasks or (settled is not None and not settled())) and (loop.time() < deadline):
            if not self._tasks:
                await asyncio.sleep(_SETTLE_POLL_S)
                continue
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), deadline - loop.time())
            except TimeoutError:
                pass
        self._ending = True
        leftover = list(self._tasks)
        self._ended_by_drain.update(leftover)
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.wait(leftover)
        return len(leftover)


_SETTLE_POLL_S = 0.01

_REFUSALS = {
    Phase.LOADING: "the server is still loading its models; retry in a moment.",
    Phase.DRAINING: "the server is shutting down; retry, on another replica if there is one.",
}
