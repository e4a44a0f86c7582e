"""An OpenAI-compatible API from plain decorated functions (docs/openai.md).

A stand-in language model (it answers with the words of the last user message) so the
example runs anywhere; its signatures are those of a real one.

blaze serve examples/llm.py:app --http-port 8000
then point any OpenAI client at http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator

from blazerpc import BlazeApp, ModelError, Status
from blazerpc.openai import ChatMessage, Chunk

app = BlazeApp()
BLOCKED_WORDS = frozenset({"darn"})


def _words(text: str) -> list[str]:
    return [f"{word} " for word in text.split()]


@app.model("chat", streaming=True, openai="chat")
async def chat(
    messages: list[ChatMessage], max_tokens: int = 64, temperature: float = 1.0
) -> AsyncIterator[Chunk]:
    """Answer the last user message, one word per token; a blocked word stops the answer."""
    prompt = " ".join(message.content for message in messages)
    question = next((m.content for m in reversed(messages) if m.role == "user"), "")
    words = _words(question)
    for number, word in enumerate(words[:max_tokens], start=1):
        if word.strip().lower() in BLOCKED_WORDS:
            raise ModelError(
                Status.FAILED_PRECONDITION,
                f"the content filter stopped the answer at word {number}; rephrase the prompt.",
            )
        yield Chunk(text=word, prompt_tokens=len(prompt.split()))
    if len(words) > max_tokens:
        yield Chunk(finish_reason="length")


@app.model("complete", streaming=True, openai="completions")
async def complete(prompt: str, max_tokens: int = 16) -> AsyncIterator[str]:
    """Continue a prompt: here, its words again."""
    for word in _words(prompt)[:max_tokens]:
        yield word


@app.model("embed", openai="embeddings")
def embed(input: list[str]) -> list[list[float]]:
    """One unit vector of 8 dimensions per input, from a hash of its words."""
    vectors = []
    for text in input:
        vector = [0.0] * 8
        for word in text.lower().split():
            digest = hashlib.sha256(word.encode()).digest()
            vector[digest[0] % 8] += 1.0
        norm = math.sqrt(sum(value * value for value in vector)) or 1.0
        vectors.append([value / norm for value in vector])
    return vectors
