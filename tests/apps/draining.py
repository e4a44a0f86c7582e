"""An app for drain tests: a unary model held until the test lets it answer, an endless stream.

The server runs in another process, so the models tell the test what they do through stdout
lines and files.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from blazerpc import BlazeApp

app = BlazeApp()


@app.model("held", max_concurrent=16)  # it waits, not computes: more than a sync model's default
def held(release: str) -> str:
    """Prints the line `held: started`, then answers once the file `release` exists."""
    sys.stdout.write("held: started\n")  # one write: calls in other threads cannot split it
    sys.stdout.flush()
    while not Path(release).exists():
        time.sleep(0.01)
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
