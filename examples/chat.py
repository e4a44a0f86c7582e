"""Token streaming, as on the BlazeRPC streaming page: an LLM stand-in that yields words.

blaze proto examples/chat.py:app
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

from blazerpc import BlazeApp, ModelError, Status

app = BlazeApp()
BLOCKED_WORDS = frozenset({"darn"})


@app.model("generate", streaming=True)
async def generate(prompt: str, max_tokens: int = 32) -> AsyncIterator[str]:
    """Stream the prompt back one word at a time, like an LLM emitting tokens."""
    for word in prompt.split()[:max_tokens]:
        yield word


@app.model("generate-sync", streaming=True)
def generate_sync(prompt: str, max_tokens: int = 32, delay_s: float = 0.0) -> Iterator[str]:
    """The same stream from a blocking model: a sync generator runs in a worker thread."""
    for word in prompt.split()[:max_tokens]:
        time.sleep(delay_s)
        yield word


@app.model("generate-filtered", streaming=True)
async def generate_filtered(prompt: str) -> AsyncIterator[str]:
    """Like generate, behind a content filter: a blocked word stops the answer mid-stream."""
    for number, word in enumerate(prompt.split(), start=1):
        if word.lower() in BLOCKED_WORDS:
            raise ModelError(
                Status.FAILED_PRECONDITION,
                f"the content filter stopped the answer at word {number}; rephrase the prompt.",
            )
        yield word
