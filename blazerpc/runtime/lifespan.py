"""Lifespan hooks: load weights once per process before serving, release them at shutdown.

A hook is a generator function with no parameters, async or sync, that yields once:

```python
@app.lifespan
async def weights() -> AsyncIterator[None]:
    state["model"] = await load()  # before the first call
    yield
    state.clear()  # after the last call has finished
```

Hooks start in the order they were registered and stop in reverse. A sync hook's steps run in
a worker thread, so health checks keep answering NOT_SERVING while it loads.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio.to_thread

from blazerpc.errors import DefinitionError, LifespanError

__all__ = ("LifespanHook", "check_hook", "run_hooks")

LifespanHook = Callable[[], AsyncIterator[None]] | Callable[[], Iterator[None]]
_DONE = object()


def check_hook(hook: object) -> None:
    """Refuse, at decoration time, what cannot be a lifespan hook."""
    name = getattr(hook, "__qualname__", repr(hook))
    is_generator = inspect.isasyncgenfunction(hook) or inspect.isgeneratorfunction(hook)
    if not is_generator:
        raise DefinitionError(
            f"lifespan hook {name}: it must be a generator function that yields once "
            "(load, `yield`, release). Add a `yield` between loading and releasing."
        )
    if any(
        parameter.default is inspect.Parameter.empty
        for parameter in inspect.signature(hook).parameters.values()  # type: ignore[arg-type]  # checked callable above
    ):
        raise DefinitionError(
            f"lifespan hook {name}: it is called with no arguments; remove its parameters "
            "(keep state in module globals or a closure)."
        )


@contextlib.asynccontextmanager
async def run_hooks(hooks: tuple[LifespanHook, ...]) -> AsyncIterator[None]:
    """Start every hook in order; on exit, stop them in reverse, even if one fails."""
    async with contextlib.AsyncExitStack() as stack:
        for hook in hooks:
            await stack.enter_async_context(_run_hook(hook))
        yield


@contextlib.asynccontextmanager
async def _run_hook(hook: LifespanHook) -> AsyncIterator[None]:
    name = getattr(hook, "__qualname__", repr(hook))
    steps: Any = hook()
    await _step(steps, name, "starting")
    try:
        yield
    finally:
        if await _step(steps, name, "stopping") is not _DONE:
            raise LifespanError(f"lifespan hook {name} yielded twice; it must yield once.")


async def _step(steps: Any, name: str, moment: str) -> object:
    try:
        if inspect.isasyncgen(steps):
            return await anext(steps, _DONE)
        return await anyio.to_thread.run_sync(next, steps, _DONE)
    except Exception as err:
        raise LifespanError(
            f"lifespan hook {name} failed while {moment}: {type(err).__name__}: {err}"
        ) from err
