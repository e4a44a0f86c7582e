"""An app whose models answer with the serving process's pid: which worker served a call."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from blazerpc import BlazeApp

app = BlazeApp()


@app.model("whoami", streaming=True)
async def whoami(count: int) -> AsyncIterator[int]:
    """The worker's pid, `count` times, 10 ms apart."""
    for _ in range(count):
        yield os.getpid()
        await asyncio.sleep(0.01)
