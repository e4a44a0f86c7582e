"""An app for drain tests: a slow unary model and an endless stream that records its closing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from blazerpc import BlazeApp

app = BlazeApp()


@app.model("slow")
async def slow(seconds: float) -> str:
    """Answers after `seconds`."""
    await asyncio.sleep(seconds)
    return "done"


@app.model("endless", streaming=True)
async def endless(marker: str) -> AsyncIterator[int]:
    """Counts forever; writes `marker` when its generator is closed."""
    count = 0
    try:
        while True:
            yield count
            count += 1
            await asyncio.sleep(0.05)
    finally:
        _mark_closed(marker)


def _mark_closed(marker: str) -> None:
    Path(marker).write_text("closed", encoding="utf-8")
