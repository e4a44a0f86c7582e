"""examples/tinylm.py: a real (tiny) language model trained at start-up, streaming text to the
stock openai client and to stock grpcio, with continuous batching; a seed repeats the text."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import grpc
import openai
import pytest

from blazerpc import BlazeServer
from blazerpc.wire.protobuf import SchemaCodec
from examples.tinylm import app

from .support import blaze_serve, free_port

pytestmark = pytest.mark.anyio


async def test_the_model_streams_text_to_openai_and_grpcio_clients() -> None:
    classes = SchemaCodec(app.schema).classes
    async with BlazeServer(app, port=0, http_port=0) as server:
        base = f"http://127.0.0.1:{server.http_port}/v1"

        def ask(seed: int) -> str:
            with openai.OpenAI(base_url=base, api_key="x", max_retries=0) as client:
                with client.chat.completions.create(
                    model="tinylm",
                    messages=[{"role": "user", "content": "The server "}],
                    stream=True,
                    max_tokens=40,
                    seed=seed,
                ) as chunks:
                    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        def over_grpc() -> list[str]:
            request: Any = classes["TinylmCompleteRequest"](prompt="blaze ", max_tokens=20)
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                call = channel.unary_stream(
                    app.schema.rpc_path(app.schema.model("tinylm-complete")),
                    request_serializer=lambda message: message.SerializeToString(),
                    response_deserializer=classes["TinylmCompleteResponse"].FromString,
                )
                return [reply.result for reply in call(request, timeout=10)]

        def stopped() -> tuple[str, str, str]:
            with openai.OpenAI(base_url=base, api_key="x", max_retries=0) as client:
                free = (
                    client.completions.create(
                        model="tinylm-complete", prompt="The ", max_tokens=60, seed=1
                    )
                    .choices[0]
                    .text
                )
                word = free.strip().split()[1] if len(free.split()) > 1 else free.strip()
                answer = client.completions.create(
                    model="tinylm-complete", prompt="The ", max_tokens=60, seed=1, stop=[word]
                )
                return free, word, answer.choices[0].text

        texts = await asyncio.gather(*(anyio.to_thread.run_sync(ask, s) for s in (1, 1, 2, 3)))
        free, word, cut = await anyio.to_thread.run_sync(stopped)
        characters = await anyio.to_thread.run_sync(over_grpc)
    assert all(len(text) == 40 for text in texts)
    assert texts[0] == texts[1]  # the same seed, the same text
    assert len(set(texts[1:])) == 3  # other seeds, other texts
    assert len(characters) == 20 and all(len(char) == 1 for char in characters)
    assert cut == free[: free.index(word)]  # the text up to the stop sequence, none of it


async def test_blaze_serve_streams_tinylm_to_the_openai_client() -> None:
    """The issue's own check, through `blaze serve examples/tinylm.py:app --http-port PORT`."""
    http_port = free_port()
    with blaze_serve("examples/tinylm.py:app", "--http-port", str(http_port)):

        def ask() -> str:
            base = f"http://127.0.0.1:{http_port}/v1"
            with openai.OpenAI(base_url=base, api_key="x", max_retries=0) as client:
                with client.chat.completions.create(
                    model="tinylm",
                    messages=[{"role": "user", "content": "The model "}],
                    stream=True,
                    max_tokens=30,
                    seed=4,
                ) as chunks:
                    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        text = await anyio.to_thread.run_sync(ask)
    assert len(text) == 30
