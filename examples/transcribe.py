"""Client streaming: audio arrives in chunks, one transcript goes back when the stream ends.

blaze proto examples/transcribe.py:app
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from blazerpc import BlazeApp

app = BlazeApp()


class Transcript(msgspec.Struct, frozen=True):
    """What was heard, and how much audio it took."""

    text: str
    chunks: int
    total_bytes: int


@app.model("transcribe")
async def transcribe(audio: AsyncIterator[bytes]) -> Transcript:
    """Transcribe a stream of audio chunks (here: UTF-8 text standing in for speech)."""
    parts: list[str] = []
    total = 0
    async for chunk in audio:
        parts.append(chunk.decode("utf-8", errors="replace"))
        total += len(chunk)
    return Transcript(text="".join(parts), chunks=len(parts), total_bytes=total)
