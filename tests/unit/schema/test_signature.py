"""Signatures: shapes, wire names and fields, and every definition error with its fix."""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

from blazerpc import BlazeApp, Context, DefinitionError
from blazerpc.schema.spec import Label, Scalar, Shape

HERE = Path(__file__).name


class NoZero(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Letters(enum.Enum):
    A = "a"
    B = "b"


class Chain(msgspec.Struct):
    value: int
    next: Chain


class Options(msgspec.Struct):
    tags: set[str]


class Detector:
    class Box(msgspec.Struct):
        x: float


class Tracker:
    class Box(msgspec.Struct):
        y: float


class GenerateRequest(msgspec.Struct):
    prompt: str


def _refusal(
    function: Callable[..., object],
    name: str = "embed",
    *,
    streaming: bool | None = None,
    app: BlazeApp | None = None,
) -> str:
    """Decorate `function` as model `name`; the DefinitionError's message, checked to name both."""
    app = app or BlazeApp()
    with pytest.raises(DefinitionError) as err:
        app.model(name, streaming=streaming)(function)
    message = str(err.value)
    assert f"model {name!r}" in message
    assert f"({function.__qualname__} in " in message
    assert f"{HERE}:{function.__code__.co_firstlineno})" in message
    return message


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


def test_wire_names_follow_the_blazerpc_convention() -> None:
    app = BlazeApp()

    @app.model("generate", streaming=True)
    async def generate(prompt: str) -> AsyncIterator[str]:
        yield prompt

    @app.model("text-embed")
    def text_embed(text: str) -> list[float]:
        return [0.0]

    @app.model("count.up")
    def count_up(n: int) -> Iterator[int]:
        yield from range(n)

    names = [
        (model.rpc_name, model.request.name, model.response.name) for model in app.registry.values()
    ]
    assert names == [
        ("PredictGenerate", "GenerateRequest", "GenerateResponse"),
        ("PredictTextEmbed", "TextEmbedRequest", "TextEmbedResponse"),
        ("PredictCountUp", "CountUpRequest", "CountUpResponse"),
    ]
    assert app.schema.message("TextEmbedRequest") is app.registry["text-embed"].request


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


def test_the_decorator_returns_the_users_function_still_callable() -> None:
    app = BlazeApp()

    def generate(prompt: str) -> str:
        return prompt.upper()

    def count_up(n: int) -> Iterator[int]:
        yield from range(n)

    assert app.model("generate")(generate) is generate
    assert app.model("count-up")(count_up) is count_up
    assert generate("hi") == "HI"
    assert list(count_up(3)) == [0, 1, 2]
    assert app.registry["generate"].function is generate


def test_the_registry_is_a_read_only_mapping() -> None:
    app = BlazeApp()

    @app.model("echo")
    def echo(text: str) -> str:
        return text

    assert isinstance(app.registry, Mapping)
    assert dict(app.registry) == {"echo": app.registry["echo"]}
    with pytest.raises(TypeError):
        app.registry["other"] = app.registry["echo"]  # type: ignore[index]  # proving read-only
    with pytest.raises(TypeError):
        del app.registry["echo"]  # type: ignore[attr-defined]  # proving read-only
    assert list(app.registry) == ["echo"]


def test_definition_error_is_a_type_error() -> None:
    assert issubclass(DefinitionError, TypeError)


def takes_set(ids: set[int]) -> int:
    return len(ids)


def takes_tuple(pair: tuple[int, int]) -> int:
    return pair[0]


def takes_object(value: object) -> int:
    return 0


def takes_any(value: Any) -> int:
    return 0


def takes_bare_list(items: list) -> int:  # type: ignore[type-arg]  # the refused form under test
    return len(items)


def takes_dict_of_object(opts: dict[str, object]) -> int:
    return len(opts)


def takes_union(value: int | str) -> int:
    return 0


def takes_float_keys(weights: dict[float, int]) -> int:
    return len(weights)


def takes_optional_list(ids: list[int] | None) -> int:
    return 0


def takes_enum_without_zero(level: NoZero) -> int:
    return int(level)


def takes_string_enum(letter: Letters) -> int:
    return 0


@pytest.mark.parametrize(
    ("function", "parameter", "annotation", "fix"),
    [
        (takes_set, "ids", "set[int]", "Use list[int]"),
        (takes_tuple, "pair", "tuple[int, int]", "Use list[int] for a sequence of one type"),
        (takes_object, "value", "object", "Use a concrete type"),
        (takes_any, "value", "Any", "Use a concrete type"),
        (takes_bare_list, "items", "list", "Give the item type, for example list[float]"),
        (
            takes_dict_of_object,
            "opts",
            "dict[str, object]",
            "protobuf map values need one type. Use dict[str, str] or a msgspec.Struct",
        ),
        (takes_union, "value", "int | str", "Use one type, or `T | None`"),
        (takes_float_keys, "weights", "dict[float, int]", "Use dict[str, V] or dict[int, V]"),
        (takes_optional_list, "ids", "list[int] | None", "give an empty default instead (`= []`)"),
        (takes_enum_without_zero, "level", "NoZero", "Add a member such as UNSPECIFIED = 0"),
        (takes_string_enum, "letter", "Letters", "Use enum.IntEnum with explicit numbers"),
    ],
    ids=lambda value: getattr(value, "__name__", None) or str(value),
)
def test_an_unsupported_annotation_is_refused_with_a_fix(
    function: Callable[..., object], parameter: str, annotation: str, fix: str
) -> None:
    message = _refusal(function)
    assert f"parameter {parameter!r} is annotated {annotation};" in message
    assert fix in message


def test_a_refused_annotation_inside_a_struct_names_the_field_path() -> None:
    def tag(opts: Options) -> int:
        return 0

    message = _refusal(tag)
    path = "parameter 'opts' is annotated Options; field 'Options.tags' is annotated set[str];"
    assert path in message
    assert "Use list[str]" in message


def test_a_struct_that_requires_itself_is_refused() -> None:
    def walk(chain: Chain) -> int:
        return chain.value

    message = _refusal(walk)
    assert "parameter 'chain' is annotated Chain; field 'Chain.next' is annotated Chain;" in message
    assert "Make the field optional (`Chain | None = None`)" in message


def test_a_missing_parameter_annotation_is_refused() -> None:
    def embed(text) -> int:  # type: ignore[no-untyped-def]  # the refused form under test
        return 0

    message = _refusal(embed)
    assert "parameter 'text' has no annotation" in message
    assert "Annotate it, for example `text: str`" in message


def test_a_missing_return_annotation_is_refused() -> None:
    def embed(text: str):  # type: ignore[no-untyped-def]  # the refused form under test
        return 0

    message = _refusal(embed)
    assert "the return annotation is missing" in message
    assert "for example `-> str`" in message


def test_variadic_parameters_are_refused() -> None:
    def embed_args(*texts: str) -> int:
        return 0

    def embed_kwargs(**texts: str) -> int:
        return 0

    assert "parameter '*texts' has no fixed name" in _refusal(embed_args)
    message = _refusal(embed_kwargs)
    assert "parameter '**texts' has no fixed name" in message
    assert "Declare each input as a named, annotated parameter." in message


def test_a_duplicate_model_name_is_refused() -> None:
    app = BlazeApp()

    @app.model("embed")
    def embed(text: str) -> int:
        return 0

    def embed_again(text: str) -> int:
        return 1

    message = _refusal(embed_again, "embed", app=app)
    assert f"taken by model 'embed' ({embed.__qualname__} in " in message
    assert "Give each model a distinct name." in message
    assert list(app.registry) == ["embed"]


def test_two_names_that_make_the_same_rpc_name_are_refused() -> None:
    app = BlazeApp()

    @app.model("text-embed")
    def text_embed(text: str) -> int:
        return 0

    def text_embed_again(text: str) -> int:
        return 1

    message = _refusal(text_embed_again, "text_embed", app=app)
    assert "taken by model 'text-embed'" in message
    assert "rpc PredictTextEmbed" in message
    assert "Give each model a distinct name." in message


@pytest.mark.parametrize("name", ["2fast", "bad name", ""])
def test_a_name_that_cannot_become_an_rpc_name_is_refused(name: str) -> None:
    def embed(text: str) -> int:
        return 0

    message = _refusal(embed, name)
    assert f"the name {name!r} cannot become an rpc name" in message
    assert "(for example 'text-embed')" in message


def test_two_stream_parameters_are_refused() -> None:
    async def merge(left: AsyncIterator[str], right: AsyncIterator[str]) -> int:
        return 0

    message = _refusal(merge)
    assert "parameters 'left', 'right' are all streams" in message
    assert "Stream one msgspec.Struct that holds every input." in message


def test_a_stream_parameter_with_another_parameter_is_refused() -> None:
    async def transcribe(chunks: AsyncIterator[bytes], language: str) -> str:
        return language

    message = _refusal(transcribe)
    assert "parameter 'chunks' is annotated AsyncIterator[bytes];" in message
    assert "but it also has 'language'" in message
    assert "Make the stream's items a msgspec.Struct holding those inputs" in message


def test_an_async_model_with_a_sync_stream_parameter_is_refused() -> None:
    async def total(values: Iterator[float]) -> float:
        return sum(values)

    message = _refusal(total)
    assert "parameter 'values' is annotated Iterator[float];" in message
    assert "Annotate it AsyncIterator[float]." in message


def test_a_sync_model_with_an_async_stream_parameter_is_refused() -> None:
    def total(values: AsyncIterator[float]) -> float:
        return 0.0

    message = _refusal(total)
    assert "parameter 'values' is annotated AsyncIterator[float];" in message
    assert "Annotate it Iterator[float], or make the function async." in message


def test_streaming_true_on_a_function_that_is_not_a_generator_is_refused() -> None:
    async def generate(prompt: str) -> str:
        return prompt

    message = _refusal(generate, "generate", streaming=True)
    assert "streaming=True, but the function is not a generator" in message
    assert "Produce the items with `yield`, or drop streaming=True" in message


def test_streaming_false_on_a_generator_is_refused() -> None:
    async def generate(prompt: str) -> AsyncIterator[str]:
        yield prompt

    message = _refusal(generate, "generate", streaming=False)
    assert "streaming=False, but the function is a generator" in message
    assert "Drop streaming=False, or return one value instead of yielding." in message


def test_a_function_returning_an_iterator_without_yielding_is_refused() -> None:
    def generate(prompt: str) -> AsyncIterator[str]:
        return async_iterator_form(prompt)

    message = _refusal(generate, "generate")
    assert "the return value is annotated AsyncIterator[str];" in message
    assert "Produce the items with `yield` in the model itself." in message


def test_two_classes_with_the_same_name_in_one_app_are_refused() -> None:
    app = BlazeApp()

    @app.model("detect")
    def detect(image: bytes) -> Detector.Box:
        return Detector.Box(0.0)

    def track(box: Tracker.Box) -> int:
        return 0

    message = _refusal(track, "track", app=app)
    assert f"class {__name__}.Tracker.Box and class {__name__}.Detector.Box" in message
    assert "(used by model 'detect') both need the protobuf name 'Box'" in message
    assert "Rename one of the classes (or the model)" in message
    assert list(app.registry) == ["detect"]


def test_a_class_named_like_a_generated_message_is_refused() -> None:
    def generate(request: GenerateRequest) -> str:
        return request.prompt

    message = _refusal(generate, "generate")
    assert f"class {__name__}.GenerateRequest and the generated GenerateRequest" in message
    assert "Rename one of the classes (or the model)" in message


@pytest.mark.parametrize("case", ["same-class-name", "generated-name"])
def test_a_message_name_clash_names_the_parameter(case: str) -> None:
    app = BlazeApp()

    @app.model("detect")
    def detect(image: bytes) -> Detector.Box:
        return Detector.Box(0.0)

    def track(box: Tracker.Box) -> int:
        return 0

    def generate(box: GenerateRequest) -> str:
        return box.prompt

    if case == "same-class-name":
        message = _refusal(track, "track", app=app)
        assert "parameter 'box' is annotated Tracker.Box" in message
    else:
        message = _refusal(generate, "generate", app=app)
        assert "parameter 'box' is annotated GenerateRequest" in message


def test_positional_only_parameters_are_refused() -> None:
    def add(a: int, /, b: int) -> int:
        return a + b

    message = _refusal(add)
    assert "parameter 'a' is positional-only" in message
    assert "Remove the `/` from the signature." in message


def test_two_fields_with_one_json_name_are_refused() -> None:
    def generate(max_tokens: int, maxTokens: int) -> str:
        return ""

    message = _refusal(generate, "generate")
    assert (
        "fields 'max_tokens' and 'maxTokens' of GenerateRequest both have the JSON name" in message
    )


class Foo(enum.IntEnum):
    UNSPECIFIED = 0
    BAR_BAZ = 1


class FooBar(enum.IntEnum):
    UNSPECIFIED = 0
    BAZ = 1


def test_enum_values_that_clash_across_enums_are_refused() -> None:
    def pick(first: Foo, second: FooBar) -> int:
        return 0

    message = _refusal(pick, "pick")
    assert "enums Foo and FooBar both give the protobuf value name FOO_BAR_BAZ" in message
