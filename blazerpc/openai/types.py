"""The types a model served with `openai=` puts in its signature: what OpenAI clients send
(ChatMessage) and what a model may yield to say more than its text (Chunk)."""

from __future__ import annotations

import msgspec

__all__ = ("ChatMessage", "Chunk")


class ChatMessage(msgspec.Struct, kw_only=True):
    """One message of a chat: `{"role": "user", "content": "Hi"}`.

    Content sent as a list of parts (`[{"type": "text", "text": "Hi"}]`) arrives joined into
    one string; fields this type does not name (tool calls, audio) are dropped.
    """

    role: str
    content: str = ""
    name: str | None = None


class Chunk(msgspec.Struct, kw_only=True):
    """A piece of generated text, and what OpenAI clients want to know about the whole.

    Yield (or return) Chunks instead of str to report why generation stopped (`"stop"`, or
    `"length"` when it ran into max_tokens) and how many tokens the prompt had; both are
    optional, and the last value given wins.
    """

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
