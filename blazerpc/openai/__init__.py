"""An OpenAI-compatible API on the HTTP gateway, for models registered with `openai=`.

`POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and `GET /v1/models` (also
under `/openai/v1`, KServe's prefix); docs/openai.md. The types for signatures are here.
"""

from blazerpc.openai.types import ChatMessage, Chunk

__all__ = ("ChatMessage", "Chunk")
