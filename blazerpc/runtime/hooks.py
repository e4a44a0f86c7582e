"""Call hooks: the auth hooks and middleware an app registers, run around every model call.

On every transport the Boundary runs, for each call: each middleware up to its `yield`
(outermost first), then each auth hook, then the model; then each middleware past its `yield`,
once, when the call has its status (innermost first). An auth hook refuses a call by raising
`ModelError` (PERMISSION_DENIED, UNAUTHENTICATED); so may middleware before its `yield`.

```python
@app.middleware
def timed(call: Call) -> Iterator[None]:
    yield
    log.info("%s %s %.1f ms", call.model, call.status.name, call.duration_s * 1e3)
```

Sync hooks and middleware run on the event loop, so they must be quick (no I/O); async ones
may await. Middleware runs in the call's task: a context variable it sets before its `yield`
(a tracing span) is what the model's own code sees.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from blazerpc.context import Call
from blazerpc.errors import DefinitionError

__all__ = ("AuthHook", "CallHooks", "Middleware", "check_auth_hook", "check_middleware")

log = logging.getLogger(__name__)
_DONE = object()

AuthHook = Callable[[Call], Awaitable[None]] | Callable[[Call], None]
"""`(call) -> None`, async or not: returns to let the call run, raises to refuse it."""
Middleware = Callable[[Call], AsyncIterator[None]] | Callable[[Call], Iterator[None]]
"""A generator function of one `Call`, async or not, that yields once: the call runs there."""


def check_auth_hook(hook: object) -> None:
    """Refuse, at decoration time, what cannot be an auth hook."""
    name = getattr(hook, "__qualname__", repr(hook))
    if not callable(hook) or inspect.isgeneratorfunction(hook) or inspect.isasyncgenfunction(hook):
        raise DefinitionError(
            f"auth hook {name}: it must be a function of one Call that returns (the call may "
            "run) or raises ModelError (it may not), not a generator. For code around the "
            "call, use @app.middleware."
        )
    _check_one_parameter(hook, f"auth hook {name}")


def check_middleware(hook: object) -> None:
    """Refuse, at decoration time, what cannot be middleware."""
    name = getattr(hook, "__qualname__", repr(hook))
    if not (inspect.isgeneratorfunction(hook) or inspect.isasyncgenfunction(hook)):
        raise DefinitionError(
            f"middleware {name}: it must be a generator function of one Call that yields "
            "once; the call runs at the `yield`. Add a `yield` where the call should run."
        )
    _check_one_parameter(hook, f"middleware {name}")


def _check_one_parameter(hook: Any, what: str) -> None:
    required = [
        p
        for p in inspect.signature(hook).parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) != 1:
        raise DefinitionError(
            f"{what}: it is called with one argument, the Call; give it exactly one required "
            f"parameter (it has {len(required)})."
        )


@dataclass(frozen=True, slots=True)
class CallHooks:
    """An app's auth hooks and middleware, in the order they were registered."""

    auth: tuple[AuthHook, ...] = ()
    middleware: tuple[Middleware, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.auth or self.middleware)

    async def before(self, call: Call, entered: list[object]) -> None:
        """Each middleware to its `yield` (added to `entered`), then each auth hook."""
        for middleware in self.middleware:
            steps: Any = middleware(call)
            if isinstance(steps, types.AsyncGeneratorType):
                await anext(steps)
            else:
                next(steps)
            entered.append(steps)
        for hook in self.auth:
            outcome = hook(call)
            if outcome is not None and inspect.isawaitable(outcome):  # an async hook's
                await outcome

    async def after(self, call: Call, entered: list[object]) -> None:
        """Each entered middleware past its `yield`, innermost first; a failure is logged.

        The call has its status already: a middleware failing now cannot change it. A second
        cancellation of the call (its deadline, then the caller's reset) can cut an async
        middleware short at an `await`; the others still finish, then the cancellation goes on.
        """
        cancelled: asyncio.CancelledError | None = None
        for done in reversed(entered):
            steps: Any = done
            try:
                if isinstance(steps, types.AsyncGeneratorType):
                    again = await anext(steps, _DONE)
                    if again is not _DONE:
                        await steps.aclose()
                else:
                    again = next(steps, _DONE)
                    if again is not _DONE:
                        steps.close()
                if again is not _DONE:
                    log.error(
                        "middleware %s yielded twice; it must yield once.", steps.__qualname__
                    )
            except asyncio.CancelledError as error:
                cancelled = error
            except Exception:
                log.exception(
                    "middleware %s failed after call %s of model %r",
                    getattr(steps, "__qualname__", steps),
                    call.request_id,
                    call.model,
                )
        if cancelled is not None:
            raise cancelled
