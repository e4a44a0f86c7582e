"""Signatures: the shape, fields and result read off a function (batch functions too), and
every mistake in a signature refused with its fix."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import Annotated

import msgspec
import pytest

from blazerpc import BlazeApp, Context, DefinitionError
from blazerpc.schema.markers import Batching
from blazerpc.schema.spec import Label, Scalar, Shape
from blazerpc.wire.proto_text import render_proto

from ..refusal import refusal


def unary_sync(text: str) -> int:
    return len(text)


async def unary_async(text: str) -> int:
    return len(text)


def server_sync(text: str) -> Iterator[int]:
    yield len(text)


async def server_async(text: str) -> AsyncIterator[int]:
    yield len(text)


def client_sync(text: Iterator[str]) -> int:
    return sum(len(t) for t in text)


async def client_async(text: AsyncIterator[str]) -> int:
    return sum([len(t) async for t in text])


def bidirectional_sync(text: Iterator[str]) -> Iterator[int]:
    for t in text:
        yield len(t)


async def bidirectional_async(text: AsyncIterator[str]) -> AsyncIterator[int]:
    async for t in text:
        yield len(t)


@pytest.mark.parametrize(
    ("function", "shape", "is_async"),
    [
        (unary_sync, Shape.UNARY, False),
        (unary_async, Shape.UNARY, True),
        (server_sync, Shape.SERVER_STREAMING, False),
        (server_async, Shape.SERVER_STREAMING, True),
        (client_sync, Shape.CLIENT_STREAMING, False),
        (client_async, Shape.CLIENT_STREAMING, True),
        (bidirectional_sync, Shape.BIDIRECTIONAL, False),
        (bidirectional_async, Shape.BIDIRECTIONAL, True),
    ],
    ids=lambda value: getattr(value, "__name__", None) or str(value),
)
def test_the_shape_is_read_from_the_signature(
    function: Callable[..., object], shape: Shape, is_async: bool
) -> None:
    app = BlazeApp()
    app.model("measure")(function)

    model = app.registry["measure"]
    assert (model.shape, model.is_async) == (shape, is_async)
    # a stream's parameter carries one item per message, never a list
    assert [(f.name, f.label, f.value_type) for f in model.request.fields] == [
        ("text", Label.SINGULAR, Scalar.STRING)
    ]
    assert [(f.name, f.label, f.value_type) for f in model.response.fields] == [
        ("result", Label.SINGULAR, Scalar.INT64)
    ]
    assert model.streamed_parameter == ("text" if shape.is_client_streaming else None)


async def seed_form(prompt: str) -> str:  # type: ignore[misc]  # the seed's `-> item` form
    yield prompt


async def async_iterator_form(prompt: str) -> AsyncIterator[str]:
    yield prompt


async def async_generator_form(prompt: str) -> AsyncGenerator[str, None]:
    yield prompt


def iterator_form(prompt: str) -> Iterator[str]:
    yield prompt


def generator_form(prompt: str) -> Generator[str, None, None]:
    yield prompt


@pytest.mark.parametrize(
    ("function", "streaming", "is_async"),
    [
        (seed_form, True, True),
        (async_iterator_form, None, True),
        (async_iterator_form, True, True),
        (async_generator_form, None, True),
        (iterator_form, None, False),
        (generator_form, True, False),
    ],
    ids=lambda value: getattr(value, "__name__", None) or str(value),
)
def test_every_streaming_return_form_streams_its_items(
    function: Callable[..., object], streaming: bool | None, is_async: bool
) -> None:
    app = BlazeApp()
    app.model("generate", streaming=streaming)(function)

    model = app.registry["generate"]
    assert (model.shape, model.is_async) == (Shape.SERVER_STREAMING, is_async)
    assert [(f.name, f.label, f.value_type) for f in model.response.fields] == [
        ("result", Label.SINGULAR, Scalar.STRING)
    ]


def test_request_fields_keep_parameter_names_numbered_in_order() -> None:
    app = BlazeApp()

    @app.model("generate")
    def generate(prompt: str, max_tokens: int = 32, temperature: float = 1.0) -> str:
        return prompt

    fields = app.registry["generate"].request.fields
    assert [(f.name, f.number) for f in fields] == [
        ("prompt", 1),
        ("max_tokens", 2),
        ("temperature", 3),
    ]


def test_a_context_parameter_is_not_on_the_wire() -> None:
    app = BlazeApp()

    @app.model("generate")
    def generate(prompt: str, ctx: Context, max_tokens: int = 32) -> str:
        return prompt

    model = app.registry["generate"]
    assert model.context_parameter == "ctx"
    assert [(f.name, f.number) for f in model.request.fields] == [
        ("prompt", 1),
        ("max_tokens", 2),
    ]


def test_the_result_is_one_field_named_result() -> None:
    app = BlazeApp()

    @app.model("score")
    def score(text: str) -> float:
        return 1.0

    @app.model("maybe")
    def maybe(text: str) -> float | None:
        return None

    (result,) = app.registry["score"].response.fields
    assert (result.name, result.number, result.value_type) == ("result", 1, Scalar.DOUBLE)
    # the server always sets a non-nullable result, so stock clients read it as a plain field
    assert not result.is_proto3_optional
    (maybe_result,) = app.registry["maybe"].response.fields
    assert (maybe_result.name, maybe_result.is_nullable) == ("result", True)
    assert maybe_result.is_proto3_optional


def test_a_model_returning_none_has_an_empty_response() -> None:
    app = BlazeApp()

    @app.model("log")
    async def log(line: str) -> None:
        return None

    model = app.registry["log"]
    assert (model.shape, model.response.name, model.response.fields) == (
        Shape.UNARY,
        "LogResponse",
        (),
    )


def test_a_missing_parameter_annotation_is_refused() -> None:
    def embed(text) -> int:  # type: ignore[no-untyped-def]  # the refused form under test
        return 0

    message = refusal(embed)
    assert "parameter 'text' has no annotation" in message
    assert "Annotate it, for example `text: str`" in message


def test_a_missing_return_annotation_is_refused() -> None:
    def embed(text: str):  # type: ignore[no-untyped-def]  # the refused form under test
        return 0

    message = refusal(embed)
    assert "the return annotation is missing" in message
    assert "for example `-> str`" in message


def test_variadic_parameters_are_refused() -> None:
    def embed_args(*texts: str) -> int:
        return 0

    def embed_kwargs(**texts: str) -> int:
        return 0

    assert "parameter '*texts' has no fixed name" in refusal(embed_args)
    message = refusal(embed_kwargs)
    assert "parameter '**texts' has no fixed name" in message
    assert "Declare each input as a named, annotated parameter." in message


@pytest.mark.parametrize("name", ["2fast", "bad name", ""])
def test_a_name_that_cannot_become_an_rpc_name_is_refused(name: str) -> None:
    def embed(text: str) -> int:
        return 0

    message = refusal(embed, name)
    assert f"the name {name!r} cannot become an rpc name" in message
    assert "(for example 'text-embed')" in message


@pytest.mark.parametrize("version", ["", "a/b", "1 2", "x" * 65, "..", "."])
def test_a_version_that_cannot_be_a_path_segment_is_refused(version: str) -> None:
    def embed(text: str) -> int:
        return 0

    message = refusal(embed, version=version)
    assert f"the version {version!r} cannot be a path segment" in message
    assert "(for example '1.2.3' or 'v2'), as version=." in message


def test_two_stream_parameters_are_refused() -> None:
    async def merge(left: AsyncIterator[str], right: AsyncIterator[str]) -> int:
        return 0

    message = refusal(merge)
    assert "parameters 'left', 'right' are all streams" in message
    assert "Stream one msgspec.Struct that holds every input." in message


def test_a_stream_parameter_with_another_parameter_is_refused() -> None:
    async def transcribe(chunks: AsyncIterator[bytes], language: str) -> str:
        return language

    message = refusal(transcribe)
    assert "parameter 'chunks' is annotated AsyncIterator[bytes];" in message
    assert "but it also has 'language'" in message
    assert "Make the stream's items a msgspec.Struct holding those inputs" in message


def test_an_async_model_with_a_sync_stream_parameter_is_refused() -> None:
    async def total(values: Iterator[float]) -> float:
        return sum(values)

    message = refusal(total)
    assert "parameter 'values' is annotated Iterator[float];" in message
    assert "Annotate it AsyncIterator[float]." in message


def test_a_sync_model_with_an_async_stream_parameter_is_refused() -> None:
    def total(values: AsyncIterator[float]) -> float:
        return 0.0

    message = refusal(total)
    assert "parameter 'values' is annotated AsyncIterator[float];" in message
    assert "Annotate it Iterator[float], or make the function async." in message


def test_streaming_true_on_a_function_that_is_not_a_generator_is_refused() -> None:
    async def generate(prompt: str) -> str:
        return prompt

    message = refusal(generate, "generate", streaming=True)
    assert "streaming=True, but the function is not a generator" in message
    assert "Produce the items with `yield`, or drop streaming=True" in message


def test_streaming_false_on_a_generator_is_refused() -> None:
    async def generate(prompt: str) -> AsyncIterator[str]:
        yield prompt

    message = refusal(generate, "generate", streaming=False)
    assert "streaming=False, but the function is a generator" in message
    assert "Drop streaming=False, or return one value instead of yielding." in message


def test_a_function_returning_an_iterator_without_yielding_is_refused() -> None:
    def generate(prompt: str) -> AsyncIterator[str]:
        return async_iterator_form(prompt)

    message = refusal(generate, "generate")
    assert "the return value is annotated AsyncIterator[str];" in message
    assert "Produce the items with `yield` in the model itself." in message


def test_positional_only_parameters_are_refused() -> None:
    def add(a: int, /, b: int) -> int:
        return a + b

    message = refusal(add)
    assert "parameter 'a' is positional-only" in message
    assert "Remove the `/` from the signature." in message


def test_a_batch_functions_wire_schema_is_the_per_call_one() -> None:
    app = BlazeApp()

    @app.model("embed", batch=Batching(max_size=64, max_wait_s=0.002))
    async def embed(texts: list[str], normalize: list[bool]) -> list[list[float]]:
        return [[1.0] for _ in texts]

    model = app.registry["embed"]
    texts, normalize = model.request.fields
    assert (texts.label, texts.value_type, texts.is_required) == (
        Label.SINGULAR,
        Scalar.STRING,
        True,
    )
    assert normalize.value_type is Scalar.BOOL
    (result,) = model.response.fields
    assert (result.label, result.value_type) == (Label.REPEATED, Scalar.DOUBLE)
    assert model.batching == Batching(max_size=64, max_wait_s=0.002)
    text = render_proto(app.schema)
    assert "optional string texts = 1;  // required" in text
    assert "repeated double result = 1;" in text


def test_a_batch_functions_schema_does_not_depend_on_the_configuration() -> None:
    schemas = []
    for config in (Batching(max_size=1), Batching(max_size=256, max_wait_s=0.05)):
        app = BlazeApp()

        @app.model("embed", batch=config)
        def embed(texts: list[str]) -> list[int]:
            return [len(t) for t in texts]

        schemas.append(render_proto(app.schema))
    assert schemas[0] == schemas[1]


def test_exceptions_in_a_batch_result_annotation_stay_off_the_wire() -> None:
    app = BlazeApp()

    @app.model("parse", batch=Batching())
    def parse(texts: list[str]) -> list[int | ValueError]:
        return [int(t) for t in texts]

    assert app.registry["parse"].response.fields[0].value_type is Scalar.INT64


def test_batching_a_streaming_model_is_refused() -> None:
    async def generate(prompt: str) -> AsyncIterator[str]:
        yield prompt

    message = refusal(generate, batch=Batching())
    assert "batch= is given, but the model streams" in message
    assert "Drop batch= from the streaming model" in message


def test_a_batch_parameter_that_is_not_a_list_is_refused() -> None:
    def embed(text: str) -> list[int]:
        return [1]

    message = refusal(embed, batch=Batching())
    assert "parameter 'text' is annotated str; a batch function receives one list" in message
    assert "Annotate it list[str]." in message


def test_a_batch_result_that_is_not_a_list_is_refused() -> None:
    def embed(texts: list[str]) -> int:
        return 1

    message = refusal(embed, batch=Batching())
    assert (
        "the return value is annotated int; a batch function returns one result per call" in message
    )
    assert "Annotate it -> list[int]." in message


def test_a_context_on_a_batch_function_is_refused() -> None:
    def embed(texts: list[str], ctx: Context) -> list[int]:
        return [1]

    assert "a batch function serves many calls at once" in refusal(embed, batch=Batching())


@pytest.mark.parametrize(
    ("default", "annotation", "says"),
    [
        ("three", "int", "the default 'three' of parameter 'n' does not fit its annotation"),
        (-1, "Annotated[int, msgspec.Meta(ge=0)]", "(expected `int` >= 0)"),
    ],
    ids=["wrong type", "outside its constraint"],
)
def test_a_default_that_does_not_match_its_annotation_is_refused(
    default: object, annotation: str, says: str
) -> None:
    namespace: dict[str, object] = {"Annotated": Annotated, "msgspec": msgspec}
    exec(f"def embed(n: {annotation} = {default!r}) -> int:\n    return 0", namespace)
    message = refusal(namespace["embed"])  # type: ignore[arg-type]
    assert says in message
    assert "Give it a default of that type, or change the annotation." in message


def test_max_concurrent_beside_batching_points_to_batching() -> None:
    def embed(text: list[str]) -> list[int]:
        return [0]

    app = BlazeApp()
    with pytest.raises(DefinitionError) as err:
        app.model("embed", batch=Batching(max_size=8), max_concurrent=2)(embed)
    assert "Bound the batches instead: Batching(max_concurrent=N)." in str(err.value)


@pytest.mark.parametrize("value", [0, -1, True, 2.5])
def test_max_concurrent_is_a_whole_number_of_calls(value: object) -> None:
    def embed(text: str) -> int:
        return 0

    app = BlazeApp()
    with pytest.raises(DefinitionError) as err:
        app.model("embed", max_concurrent=value)(embed)  # type: ignore[arg-type]
    assert f"max_concurrent={value!r} is not a number of calls" in str(err.value)


@pytest.mark.parametrize(
    ("default", "annotation"),
    [("3", "int"), ("true", "bool"), ("1.5", "float"), (1.0, "int")],
)
def test_a_default_is_not_converted_to_fit(default: object, annotation: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"def embed(n: {annotation} = {default!r}) -> int:\n    return 0", namespace)
    message = refusal(namespace["embed"])  # type: ignore[arg-type]
    assert "does not fit its annotation" in message
