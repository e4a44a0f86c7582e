"""BlazeApp: the decorator leaves functions alone, the registry is a read-only view, and a
name (and the rpc name made from it) is taken once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping

import msgspec
import pytest

from blazerpc import BlazeApp, DefinitionError
from blazerpc.schema.spec import MessageRef, Shape

from .refusal import refusal


def test_the_decorated_function_is_still_the_users_function() -> None:
    app = BlazeApp()

    def add(a: int, b: int) -> int:
        return a + b

    def count_up(n: int) -> Iterator[int]:
        yield from range(n)

    assert app.model("add")(add) is add
    assert app.model("count-up")(count_up) is count_up
    assert add(2, 3) == 5  # mypy checks this call against the real signature
    assert list(count_up(3)) == [0, 1, 2]
    assert app.registry["add"].function is add


@pytest.mark.anyio
async def test_a_decorated_generator_still_streams_when_called_directly() -> None:
    app = BlazeApp()

    @app.model("generate", streaming=True)
    async def generate(prompt: str, max_tokens: int = 32) -> AsyncIterator[str]:
        for word in prompt.split()[:max_tokens]:
            yield word

    assert [word async for word in generate("a b c", max_tokens=2)] == ["a", "b"]


def test_registry_lists_models_in_registration_order_and_stays_current() -> None:
    app = BlazeApp()
    registry = app.registry

    @app.model("b")
    def b(x: int) -> int:
        return x

    @app.model("a")
    def a(x: int) -> int:
        return x

    assert list(registry) == ["b", "a"]
    assert registry["a"].function is a
    assert registry["b"].shape is Shape.UNARY
    assert "c" not in registry
    with pytest.raises(KeyError):
        registry["c"]


def test_registry_cannot_be_changed() -> None:
    app = BlazeApp()

    @app.model("a")
    def a(x: int) -> int:
        return x

    assert isinstance(app.registry, Mapping)
    assert dict(app.registry) == {"a": app.registry["a"]}
    with pytest.raises(TypeError):
        app.registry["b"] = app.registry["a"]  # type: ignore[index]  # proving it is read-only
    with pytest.raises(TypeError):
        del app.registry["a"]  # type: ignore[attr-defined]  # proving it is read-only
    assert list(app.registry) == ["a"]


def test_a_failed_registration_leaves_the_app_unchanged() -> None:
    app = BlazeApp()

    @app.model("a")
    def a(x: int) -> int:
        return x

    with pytest.raises(DefinitionError):

        @app.model("a")
        def again(x: int) -> int:
            return x

    assert list(app.registry) == ["a"]
    assert app.registry["a"].function is a


def test_a_duplicate_model_name_is_refused() -> None:
    app = BlazeApp()

    @app.model("embed")
    def embed(text: str) -> int:
        return 0

    def embed_again(text: str) -> int:
        return 1

    message = refusal(embed_again, "embed", app=app)
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

    message = refusal(text_embed_again, "text_embed", app=app)
    assert "taken by model 'text-embed'" in message
    assert "rpc PredictTextEmbed" in message
    assert "Give each model a distinct name." in message


def test_classes_local_to_the_decorating_scope_resolve() -> None:
    class Reading(msgspec.Struct):
        value: float

    app = BlazeApp()

    @app.model("mean")
    def mean(readings: list[Reading]) -> float:
        return sum(r.value for r in readings) / len(readings)

    field = app.registry["mean"].request.fields[0]
    assert field.value_type == MessageRef("Reading")
    assert app.schema.message("Reading").python_type is Reading


def test_package_and_service_can_be_chosen() -> None:
    app = BlazeApp(package="acme.vision", service="Vision")
    assert app.schema.full_name == "acme.vision.Vision"
    assert app.schema.file_name == "acme/vision.proto"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"package": "Acme-Vision"}, "BlazeApp(package='Acme-Vision'): a proto package"),
        ({"service": "my service"}, "BlazeApp(service='my service'): a service name"),
    ],
)
def test_bad_package_or_service_names_are_refused(kwargs: dict[str, str], expected: str) -> None:
    with pytest.raises(DefinitionError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        BlazeApp(**kwargs)


def test_decorating_something_other_than_a_function_is_refused() -> None:
    app = BlazeApp()

    class Model:
        def __call__(self, x: int) -> int:
            return x

    with pytest.raises(
        DefinitionError, match="@app.model decorates a function, but got a Model object"
    ):
        app.model("m")(Model())
