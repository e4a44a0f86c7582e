"""The one error boundary every call passes, whatever the transport.

`Boundary` admits a call, runs it, turns any failure into a status (errors.to_status) and
records it (metrics, access log: accesslog.py). Transports reach it through a `CallPort`
(runtime/calls.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from blazerpc.config import ServerConfig
from blazerpc.context import Call, Context
from blazerpc.errors import (
    NOT_RUN,
    LimitError,
    UnavailableError,
    to_status,
)
from blazerpc.runtime.accesslog import AccessLog
from blazerpc.runtime.admission import Admission
from blazerpc.runtime.batcher import Batcher
from blazerpc.runtime.calls import CallPort, ModelCall, ModelRunner, Tally
from blazerpc.runtime.continuous import ContinuousBatcher
from blazerpc.runtime.hooks import CallHooks
from blazerpc.runtime.metrics import Metrics
from blazerpc.schema.markers import Batching
from blazerpc.schema.spec import ModelSpec, ServiceSpec

__all__ = ("Boundary", "Limits", "RunnerFactory", "local_runner", "model_calls")

_NOTHING_INJECTED: dict[str, object] = {}
"""The arguments the server fills in for a model that takes none (never changed)."""
_NOTHING_ENTERED: list[object] = []
"""The middleware entered by a call of an app that has none (never changed)."""

_ENDED_BY_DRAIN = (
    "the server shut down before this call finished (its grace period ran out); "
    "retry, on another replica if there is one."
)


RunnerFactory = Callable[[ModelSpec, "Metrics | None"], ModelRunner]
"""Makes the runner of one model's calls (default: `local_runner`, in this process)."""


def local_runner(model: ModelSpec, metrics: Metrics | None) -> ModelCall:
    """The model's calls run here, batched as it asks."""
    return ModelCall(
        model,
        Batcher(model, model.batching, metrics.batch_started if metrics else None)
        if isinstance(model.batching, Batching)
        else None,
        ContinuousBatcher.of(model, metrics.step_ran if metrics else None),
    )


def model_calls(
    schema: ServiceSpec,
    admission: Admission,
    metrics: Metrics | None,
    access: AccessLog,
    *,
    redacts_errors: bool = False,
    hooks: CallHooks | None = None,
    runner: RunnerFactory = local_runner,
) -> dict[str, Boundary]:
    """Each model's call behind the boundary: shared by gRPC and HTTP, batchers included.

    `redacts_errors`: an INTERNAL answer names the model and the request id, nothing more.
    `hooks`: the app's auth hooks and middleware, run around every call.
    `runner`: what runs the calls once admitted (another process's replicas, for Ray).
    """
    return {
        model.name: Boundary(
            runner(model, metrics),
            admission,
            metrics,
            access,
            redacts_errors=redacts_errors,
            hooks=hooks,
        )
        for model in schema.models
    }


class Boundary:
    """Admits one model's calls, runs them, and turns every failure into a status.

    A failure leaves `run()` as GRPCError(status, message), whatever the transport; a
    cancelled call stays cancelled. Each call is counted (metrics) and logged (access log).
    """

    def __init__(
        self,
        call: ModelRunner,
        admission: Admission,
        metrics: Metrics | None,
        access: AccessLog,
        *,
        redacts_errors: bool = False,
        hooks: CallHooks | None = None,
    ) -> None:
        self.call = call
        self._redacts = redacts_errors
        self._hooks = hooks or None  # no hooks: no Call object is made
        self.model = call.model
        self._admission = admission
        self._metrics = metrics
        self._access = access
        self._shape = self.model.shape.value  # read once: enum attributes cost on every call
        self._counts_items = self.model.shape.is_server_streaming
        self._times_items = metrics is not None and self.model.shape.is_server_streaming

    @property
    def batcher(self) -> Batcher | None:
        """The model's batcher, if it batches."""
        return self.call.batcher

    async def run(self, port: CallPort) -> None:
        """Admit, run and record one call."""
        model, admission, metrics = self.model, self._admission, self._metrics
        tally = Tally()
        if self._times_items and metrics is not None:
            tally.timer = metrics.stream_timer(model.name, tally.started)
        context: Context | None = None
        injected = _NOTHING_INJECTED
        if model.context_parameter is not None:
            context = port.context()
            injected = {model.context_parameter: context}
        hooks, call, entered = self._hooks, None, _NOTHING_ENTERED
        if hooks is not None:
            call = Call(model.name, self._shape, port.transport, context or port.context())
            entered = []  # the middleware past its `yield`, to resume after the call
        task: asyncio.Task[object] | None = None
        status, message = Status.OK, ""
        failure: BaseException | None = None
        try:
            if hooks is not None and call is not None:
                await hooks.before(call, entered)
            first = await port.receive()  # first: a call that sends nothing holds no slot
            # gRPC tells its clients GOAWAY when a drain begins and refuses what they send
            # later; a call it still delivers was sent before: served, not lost
            task = admission.admit(model, handover=port.transport == "grpc")
            await self.call.run(port, injected, tally, first)
        except asyncio.CancelledError as error:
            failure = error
            if context is not None:
                context.cancel()
            if task is not None and admission.is_ended_by_drain(task):
                task.uncancel()
                status, message = to_status(
                    UnavailableError(_ENDED_BY_DRAIN), model.name, request_id=port.request_id
                )
                raise GRPCError(status, message) from None
            status = port.cancelled_status()
            raise
        except Exception as error:  # the one boundary: every failure becomes a status
            failure = error
            status, message = to_status(
                error, model.name, request_id=port.request_id, redact=self._redacts
            )
            raise GRPCError(status, message, NOT_RUN if task is None else None) from None
        finally:
            if task is not None:
                admission.release(task, model)
            duration_s = time.perf_counter() - tally.started
            if tally.timer is not None:
                tally.timer.flush()
            if metrics is not None:
                metrics.call_ended(model.name, model.shape.value, status, duration_s)
            if self._access.is_enabled:
                self._access.call_ended(
                    model.name,
                    self._shape,
                    status,
                    duration_s,
                    tally.items if self._counts_items else None,
                    port.peer,
                    port.transport,
                    port.request_id,
                )
            if hooks is not None and call is not None:
                call.status, call.message, call.error = status, message, failure
                call.duration_s = duration_s
                await hooks.after(call, entered)


@dataclass(frozen=True, slots=True)
class Limits:
    """Message size limits, and how long a started request message may stall, the same over
    every transport."""

    max_request_bytes: int
    max_response_bytes: int
    message_timeout: float = 0.0

    @classmethod
    def of(cls, config: ServerConfig) -> Limits:
        return cls(config.max_request_bytes, config.max_response_bytes, config.message_timeout)

    def check_response(self, size: int, model: str) -> None:
        """A response over the limit fails its call with RESOURCE_EXHAUSTED."""
        if size > self.max_response_bytes:
            raise LimitError(
                f"model {model!r} produced a {size}-byte response, over the "
                f"server's limit of {self.max_response_bytes} bytes (max_response_bytes)."
            )

    def request_too_large(self, size: int, *, inflated: bool = False) -> LimitError:
        """The error for a request message of `size` bytes, over the limit; `inflated`: it
        was compressed, and inflating it passed the limit (so `size` is a lower bound)."""
        what = f"inflates to over {size - 1} bytes" if inflated else f"is {size} bytes"
        return LimitError(
            f"the request message {what}, over the server's limit of "
            f"{self.max_request_bytes} bytes (max_request_bytes). Send less per message, "
            "or stream it in parts."
        )
