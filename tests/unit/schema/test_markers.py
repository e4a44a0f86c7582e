"""Batch functions: the per-call schema, and every mistake refused at decoration time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from blazerpc import BlazeApp, Context, DefinitionError
from blazerpc.schema.markers import Batching
from blazerpc.schema.spec import Label, Scalar
from blazerpc.wire.proto_text import render_proto


def test_the_wire_schema_is_the_per_call_one() -> None:
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


def test_the_batch_signature_does_not_depend_on_the_configuration() -> None:
    schemas = []
    for config in (Batching(max_size=1), Batching(max_size=256, max_wait_s=0.05)):
        app = BlazeApp()

        @app.model("embed", batch=config)
        def embed(texts: list[str]) -> list[int]:
            return [len(t) for t in texts]

        schemas.append(render_proto(app.schema))
    assert schemas[0] == schemas[1]


def test_exceptions_in_the_result_annotation_stay_off_the_wire() -> None:
    app = BlazeApp()

    @app.model("parse", batch=Batching())
    def parse(texts: list[str]) -> list[int | ValueError]:
        return [int(t) for t in texts]

    assert app.registry["parse"].response.fields[0].value_type is Scalar.INT64


def _refusal(function: Callable[..., object]) -> str:
    with pytest.raises(DefinitionError) as err:
        BlazeApp().model("m", batch=Batching())(function)
    return str(err.value)


def test_batching_a_streaming_model_is_refused() -> None:
    async def generate(prompt: str) -> AsyncIterator[str]:
        yield prompt

    message = _refusal(generate)
    assert "batch= is given, but the model streams" in message
    assert "Drop batch= from the streaming model" in message


def test_a_parameter_that_is_not_a_list_is_refused() -> None:
    def embed(text: str) -> list[int]:
        return [1]

    message = _refusal(embed)
    assert "parameter 'text' is annotated str; a batch function receives one list" in message
    assert "Annotate it list[str]." in message


def test_a_result_that_is_not_a_list_is_refused() -> None:
    def embed(texts: list[str]) -> int:
        return 1

    message = _refusal(embed)
    assert (
        "the return value is annotated int; a batch function returns one result per call" in message
    )
    assert "Annotate it -> list[int]." in message


def test_a_context_on_a_batch_function_is_refused() -> None:
    def embed(texts: list[str], ctx: Context) -> list[int]:
        return [1]

    assert "a batch function serves many calls at once" in _refusal(embed)


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        ({"max_size": 0}, "Batching(max_size=0): max_size is a whole number of at least 1"),
        ({"max_size": True}, "Batching(max_size=True)"),
        ({"max_queue": -1}, "Batching(max_queue=-1)"),
        ({"max_concurrent": 0}, "Batching(max_concurrent=0)"),
        ({"max_wait_s": -0.001}, "Batching(max_wait_s=-0.001): the wait is in seconds"),
        ({"max_wait_s": 120}, "Batching(max_wait_s=120)"),
    ],
)
def test_bad_knob_values_are_refused(knobs: dict[str, object], expected: str) -> None:
    with pytest.raises(DefinitionError) as err:
        Batching(**knobs)  # type: ignore[arg-type]
    assert expected in str(err.value)
