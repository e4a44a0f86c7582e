"""The OpenAI-compatible API, judged by the stock `openai` client (sync and async, retries off,
streams closed with `with`): chat, completions, embeddings, the model list, errors before and
inside a stream, and a client that leaves early."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from blazerpc import Batching, BlazeApp, BlazeClient, BlazeServer, DefinitionError
from blazerpc.openai import ChatMessage, Chunk
from examples.llm import app as llm_app

from .support import blaze_serve, free_port, wait_until

pytestmark = pytest.mark.anyio
T = TypeVar("T")
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there world"}]


def _body(raised: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    """The `error` object of an error response, as the client parsed it."""
    return cast(dict[str, Any], raised.value.body)


async def _sync(call: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(call)


_OPENED: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Each test's clients are closed after it (their pooled sockets with them)."""
    yield
    while _OPENED:
        _OPENED.pop().close()


def _client(server: BlazeServer, prefix: str = "/v1", **options: Any) -> openai.OpenAI:
    base = f"http://127.0.0.1:{server.http_port}{prefix}"
    client = openai.OpenAI(base_url=base, api_key=options.pop("api_key", "unused"), max_retries=0)
    _OPENED.append(client)
    return client


async def test_chat_streams_tokens_then_the_finish_reason_and_the_usage() -> None:
    async with BlazeServer(llm_app, port=0, http_port=0) as server:
        client = _client(server)

        def stream() -> list[Any]:
            with client.chat.completions.create(
                model="chat",
                messages=USER,
                stream=True,
                stream_options={"include_usage": True},
            ) as chunks:
                return list(chunks)

        chunks = await _sync(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices]
    assert texts == ["", "hello ", "there ", "world ", None]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices] == [None] * 4 + ["stop"]
    assert all(c.object == "chat.completion.chunk" and c.model == "chat" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 3, 6)


async def test_chat_without_stream_joins_the_tokens_into_one_message() -> None:
    async with BlazeServer(llm_app, port=0, http_port=0) as server:
        client = _client(server, prefix="/openai/v1")  # KServe's prefix serves the same
        answer = await _sync(
            lambda: client.chat.completions.create(
                model="chat",
                messages=[{"role": "system", "content": "be brief"}, *USER],
                max_tokens=2,
            )
        )
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == "hello there "
    assert answer.choices[0].finish_reason == "length"  # the model said so, with a Chunk
    assert answer.usage is not None and answer.usage.completion_tokens == 2  # the end is no token


async def test_completions_with_the_async_client_and_content_parts() -> None:
    async with BlazeServer(llm_app, port=0, http_port=0) as server:
        base = f"http://127.0.0.1:{server.http_port}/v1"
        async with openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0) as client:
            whole = await client.completions.create(model="complete", prompt="a b c", max_tokens=2)
            pieces = []
            async with await client.completions.create(
                model="complete", prompt=["a b c"], stream=True
            ) as stream:
                async for piece in stream:
                    pieces.append((piece.choices[0].text, piece.choices[0].finish_reason))
            parts = await client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": [{"type": "text", "text": "one two"}]}],
            )
    assert whole.object == "text_completion" and whole.choices[0].text == "a b "
    assert whole.choices[0].finish_reason == "length"  # as many items as max_tokens
    assert pieces == [("a ", None), ("b ", None), ("c ", None), ("", "stop")]
    assert parts.choices[0].message.content == "one two "


async def test_embeddings_as_floats_and_as_base64_the_clients_default() -> None:
    async with BlazeServer(llm_app, port=0, http_port=0) as server:
        client = _client(server)
        floats = await _sync(
            lambda: client.embeddings.create(
                model="embed", input=["hello world", "x"], encoding_format="float"
            )
        )
        raw = await _sync(
            lambda: httpx.post(
                f"http://127.0.0.1:{server.http_port}/v1/embeddings",
                json={"model": "embed", "input": "hello world", "encoding_format": "base64"},
            ).json()
        )
        default = await _sync(lambda: client.embeddings.create(model="embed", input="hello world"))
    assert [item.index for item in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 8
    assert abs(sum(v * v for v in floats.data[0].embedding) - 1.0) < 1e-9
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack("<8f", packed)) == pytest.approx(floats.data[0].embedding, 1e-6)
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, 1e-6)


async def test_models_list_names_the_models_of_the_openai_routes() -> None:
    async with BlazeServer(llm_app, port=0, http_port=0) as server:
        client = _client(server)
        names = await _sync(lambda: [model.id for model in client.models.list()])
        one = await _sync(lambda: client.models.retrieve("chat"))
        with pytest.raises(openai.NotFoundError):
            await _sync(lambda: client.models.retrieve("nope"))
    assert names == ["chat", "complete", "embed"]
    assert one.id == "chat" and one.owned_by == "blazerpc"


async def test_errors_before_the_stream_have_openais_shape_and_say_whether_to_retry() -> None:
    async with BlazeServer(llm_app, port=0, http_port=0) as server:
        client = _client(server)
        with pytest.raises(openai.NotFoundError) as unknown:
            await _sync(lambda: client.chat.completions.create(model="nope", messages=USER))
        with pytest.raises(openai.NotFoundError) as wrong_route:
            await _sync(lambda: client.chat.completions.create(model="embed", messages=USER))
        with pytest.raises(openai.BadRequestError) as two_choices:
            await _sync(lambda: client.chat.completions.create(model="chat", messages=USER, n=2))
        with pytest.raises(openai.BadRequestError) as bad_type:
            await _sync(
                lambda: client.chat.completions.create(  # type: ignore[call-overload]
                    model="chat",
                    messages=USER,
                    max_tokens="many",  # the mistake under test
                )
            )
        with pytest.raises(openai.BadRequestError) as tools:
            await _sync(
                lambda: client.chat.completions.create(
                    model="chat",
                    messages=USER,
                    tools=[{"type": "function", "function": {"name": "f"}}],
                )
            )
    assert _body(unknown) == {
        "message": "there is no model named 'nope'; this server serves: chat. See GET /v1/models.",
        "type": "not_found_error",
        "param": None,
        "code": "model_not_found",
    }
    assert unknown.value.response.headers["x-should-retry"] == "false"
    assert "model 'embed' is served on /v1/embeddings, not /v1/chat/completions" in str(
        wrong_route.value.message
    )
    assert _body(two_choices)["param"] == "n"
    assert "one choice per request" in _body(two_choices)["message"]
    assert _body(bad_type)["param"] == "max_tokens"
    assert _body(bad_type)["message"] == "field 'max_tokens': expected int, got str."
    assert _body(tools)["param"] == "tools"


async def test_an_error_inside_the_stream_raises_api_error_with_our_message() -> None:
    async with BlazeServer(llm_app, port=0, http_port=0) as server:
        client = _client(server)
        seen: list[str | None] = []

        def stream() -> None:
            with client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "oh darn it"}], stream=True
            ) as chunks:
                for chunk in chunks:
                    seen.append(chunk.choices[0].delta.content)

        with pytest.raises(openai.APIError) as err:
            await _sync(stream)
    assert seen == ["", "oh "]
    assert err.value.message == (
        "the content filter stopped the answer at word 2; rephrase the prompt."
    )


def _endless_app(closed: list[str]) -> BlazeApp:
    app = BlazeApp()

    @app.model("endless", streaming=True, openai="chat")
    async def endless(messages: list[ChatMessage]) -> AsyncIterator[str]:
        try:
            while True:
                yield "token "
                await asyncio.sleep(0.01)
        finally:
            closed.append("closed")

    return app


async def test_a_client_that_closes_the_stream_early_closes_the_generator() -> None:
    closed: list[str] = []
    async with BlazeServer(_endless_app(closed), port=0, http_port=0) as server:
        client = _client(server)

        def read_three() -> list[str | None]:
            with client.chat.completions.create(
                model="endless", messages=USER, stream=True
            ) as chunks:
                return [next(chunks).choices[0].delta.content for _ in range(3)]

        first = await _sync(read_three)
        await wait_until(lambda: closed == ["closed"], "the generator was closed")
        assert server.running_calls == 0
    assert first == ["", "token ", "token "]


async def test_the_same_model_still_serves_typed_grpc_and_keys_guard_the_routes(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k-openai-1\n")
    async with BlazeServer(llm_app, port=0, http_port=0, api_key_file=str(keys)) as server:
        async with BlazeClient(
            port=server.port, app=llm_app, timeout=5, api_key="k-openai-1"
        ) as typed:
            tokens = [
                chunk.text
                async for chunk in typed.stream(
                    "chat", messages=[ChatMessage(role="user", content="a b")]
                )
            ]
        with pytest.raises(openai.AuthenticationError) as refused:
            await _sync(
                lambda: _client(server, api_key="wrong").chat.completions.create(
                    model="chat", messages=USER
                )
            )
        allowed = await _sync(
            lambda: _client(server, api_key="k-openai-1").chat.completions.create(
                model="chat", messages=USER
            )
        )
    assert tokens == ["a ", "b "]
    assert _body(refused)["type"] == "authentication_error"
    assert allowed.choices[0].message.content == "hello there world "


async def test_a_unary_model_answers_streamed_and_whole_requests() -> None:
    app = BlazeApp()

    @app.model("echo", openai="completions")
    def echo(prompt: str, stop: list[str] = []) -> str:  # noqa: B006 (copied per call)
        return f"{prompt} until {','.join(stop)}"

    async with BlazeServer(app, port=0, http_port=0) as server:
        client = _client(server)
        whole = await _sync(
            lambda: client.completions.create(model="echo", prompt="hi", stop="\n", seed=7)
        )

        def stream() -> list[tuple[str, str | None]]:
            with client.completions.create(model="echo", prompt="hi", stream=True) as pieces:
                return [(p.choices[0].text, p.choices[0].finish_reason) for p in pieces]

        streamed = await _sync(stream)
    assert whole.choices[0].text == "hi until \n"  # a stop string, for a list of them
    assert streamed == [("hi until ", None), ("", "stop")]


def test_a_parameter_no_request_field_can_fill_fails_at_import() -> None:
    app = BlazeApp()

    def chat(messages: list[ChatMessage], persona: str) -> str:
        return ""

    with pytest.raises(DefinitionError) as err:
        app.model("chat", openai="chat")(chat)
    assert "model 'chat'" in str(err.value)
    assert "parameter 'persona' is not a field of an OpenAI chat request" in str(err.value)
    assert "Give it a default, or rename it" in str(err.value)


def test_a_chat_model_without_messages_or_with_a_result_that_is_not_text_fails_at_import() -> None:
    app = BlazeApp()

    def takes_prompt(prompt: str) -> str:
        return prompt

    def counts(messages: list[ChatMessage]) -> int:
        return 0

    def stream_in(messages: Iterator[ChatMessage]) -> str:
        return ""

    with pytest.raises(DefinitionError) as no_messages:
        app.model("a", openai="chat")(takes_prompt)
    with pytest.raises(DefinitionError) as not_text:
        app.model("b", openai="chat")(counts)
    with pytest.raises(DefinitionError) as bad_kind:
        app.model("c", openai="images")(counts)
    assert "needs a parameter 'messages'" in str(no_messages.value)
    assert "the result is int, which cannot become chat text" in str(not_text.value)
    assert "blazerpc.openai.Chunk" in str(not_text.value)
    assert "openai='images' names no OpenAI route" in str(bad_kind.value)
    assert Chunk(text="x").finish_reason is None
    del stream_in


async def test_a_batched_embeddings_model_gets_a_requests_inputs_together() -> None:
    app = BlazeApp()
    batches: list[int] = []

    @app.model("embed-one", openai="embeddings", batch=Batching(max_size=16, max_wait_s=0.05))
    def embed_one(input: list[str]) -> list[list[float]]:
        batches.append(len(input))
        return [[float(len(text)), 1.0] for text in input]

    async with BlazeServer(app, port=0, http_port=0) as server:
        client = _client(server)
        texts = ["a", "bb", "ccc", "dddd", "e", "ff", "ggg", "hhhh"]
        answer = await _sync(
            lambda: client.embeddings.create(
                model="embed-one", input=texts, encoding_format="float"
            )
        )
        with pytest.raises(openai.BadRequestError) as bad:
            await _sync(
                lambda: client.embeddings.create(
                    model="embed-one",
                    input=["fine", 7],  # type: ignore[arg-type]  # the mistake under test
                    encoding_format="float",
                )
            )
    assert [item.embedding for item in answer.data] == [[float(len(t)), 1.0] for t in texts]
    assert [item.index for item in answer.data] == list(range(8))
    assert max(batches) > 1  # the request's inputs shared batches
    assert _body(bad)["param"] == "input[1]"
    assert _body(bad)["message"] == "field 'input[1]': expected str, got int."


async def test_blaze_serve_streams_the_example_to_the_openai_client() -> None:
    """The issue's own check: `blaze serve examples/llm.py:app --http-port PORT`, then the
    stock client, streaming, and an error mid-stream raising APIError."""
    http_port = free_port()
    with blaze_serve("examples/llm.py:app", "--http-port", str(http_port)):
        base = f"http://127.0.0.1:{http_port}/v1"

        def talk() -> tuple[list[str | None], str]:
            with openai.OpenAI(base_url=base, api_key="x", max_retries=0) as client:
                with client.chat.completions.create(
                    model="chat", messages=USER, stream=True
                ) as chunks:
                    tokens = [chunk.choices[0].delta.content for chunk in chunks]
                try:
                    with client.chat.completions.create(
                        model="chat",
                        messages=[{"role": "user", "content": "oh darn"}],
                        stream=True,
                    ) as chunks:
                        list(chunks)
                except openai.APIError as err:
                    return tokens, err.message
            return tokens, ""

        tokens, error = await _sync(talk)
    assert tokens == ["", "hello ", "there ", "world ", None]
    assert error == "the content filter stopped the answer at word 2; rephrase the prompt."


def _held_app(release: asyncio.Event) -> BlazeApp:
    app = BlazeApp()

    @app.model("held", streaming=True, openai="completions")
    async def held(prompt: str) -> AsyncIterator[str]:
        yield "first "
        await release.wait()

    return app


async def test_a_full_server_answers_429_that_the_client_may_retry() -> None:
    release = asyncio.Event()
    async with BlazeServer(_held_app(release), port=0, http_port=0, max_streams=1) as server:
        base = f"http://127.0.0.1:{server.http_port}"
        body = {"model": "held", "prompt": "x", "stream": True}
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            async with http.stream("POST", "/v1/completions", json=body) as open_stream:
                async for line in open_stream.aiter_lines():
                    if "first" in line:
                        break
                refused = await http.post("/v1/completions", json=body)
                release.set()
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-should-retry"] == "true"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "max_streams" in refused.json()["error"]["message"]


def _review_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("said", openai="chat")
    def said(messages: list[ChatMessage], stop: str | None = None, max_tokens: int = 9) -> str:
        return f"{[m.content for m in messages]} stop={stop!r} max={max_tokens}"

    @app.model("vectors", openai="embeddings", batch=Batching(max_size=32))
    def vectors(input: list[str]) -> list[list[float]]:
        return [[float(len(text))] for text in input]

    @app.model("ends", streaming=True, openai="completions")
    async def ends(prompt: str, max_tokens: int = 16) -> AsyncIterator[Chunk]:
        for word in prompt.split()[:max_tokens]:
            yield Chunk(text=word)
        yield Chunk(finish_reason="length")  # no text: not a token

    return app


async def test_the_reviews_findings_on_fields_errors_and_counting() -> None:
    async with BlazeServer(_review_app(), port=0, http_port=0) as server:
        base = f"http://127.0.0.1:{server.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            one_stop = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "said",
                    "messages": [{"role": "user", "content": "a"}],
                    "stop": ["\n"],
                },
            )
            no_messages = await http.post("/v1/chat/completions", json={"model": "said"})
            null_text = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "said",
                    "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}],
                    "max_tokens": None,
                    "max_completion_tokens": 3,
                },
            )
            many = await http.post(
                "/v1/embeddings",
                json={"model": "vectors", "input": ["x"] * 2048, "encoding_format": "float"},
            )
            counted = await http.post(
                "/v1/completions", json={"model": "ends", "prompt": "a b c", "max_tokens": 2}
            )
            too_large = await http.post(
                "/v1/chat/completions",
                content=b'{"model": "said", "messages": []' + b" " * (5 * 1024 * 1024) + b"}",
            )
    assert one_stop.json()["choices"][0]["message"]["content"].endswith("stop='\\n' max=9")
    assert no_messages.status_code == 400
    assert no_messages.json()["error"]["param"] == "messages"
    assert null_text.json()["choices"][0]["message"]["content"] == "[''] stop=None max=3"
    assert many.status_code == 200 and len(many.json()["data"]) == 2048
    assert counted.json()["usage"]["completion_tokens"] == 2
    assert counted.json()["choices"][0]["finish_reason"] == "length"
    assert too_large.status_code == 413
    assert too_large.json()["error"]["type"] == "invalid_request_error"
    assert too_large.headers["x-should-retry"] == "false"


async def test_a_slow_first_token_after_keep_alives_still_opens_with_the_role() -> None:
    app = BlazeApp()

    @app.model("slow", streaming=True, openai="chat")
    async def slow(messages: list[ChatMessage]) -> AsyncIterator[str]:
        await asyncio.sleep(0.3)  # a long prefill: keep-alives go out first
        yield "late"

    async with BlazeServer(app, port=0, http_port=0, sse_keepalive=0.05) as server:
        body = {"model": "slow", "messages": USER, "stream": True}
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http,
            http.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            lines = [line async for line in response.aiter_lines()]
    events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert ": keep-alive" in lines
    assert '"role":"assistant"' in events[0]
