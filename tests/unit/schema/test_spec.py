"""The schema as a whole: two names that would clash on the wire are refused, naming both."""

from __future__ import annotations

import enum

import msgspec
import pytest

from blazerpc import BlazeApp

from ..refusal import refusal


class Detector:
    class Box(msgspec.Struct):
        x: float


class Tracker:
    class Box(msgspec.Struct):
        y: float


class GenerateRequest(msgspec.Struct):
    prompt: str


def test_two_classes_with_the_same_name_in_one_app_are_refused() -> None:
    app = BlazeApp()

    @app.model("detect")
    def detect(image: bytes) -> Detector.Box:
        return Detector.Box(0.0)

    def track(box: Tracker.Box) -> int:
        return 0

    message = refusal(track, "track", app=app)
    assert f"class {__name__}.Tracker.Box and class {__name__}.Detector.Box" in message
    assert "(used by model 'detect') both need the protobuf name 'Box'" in message
    assert "Rename one of the classes (or the model)" in message
    assert list(app.registry) == ["detect"]


def test_a_class_named_like_a_generated_message_is_refused() -> None:
    def generate(request: GenerateRequest) -> str:
        return request.prompt

    message = refusal(generate, "generate")
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
        message = refusal(track, "track", app=app)
        assert "parameter 'box' is annotated Tracker.Box" in message
    else:
        message = refusal(generate, "generate", app=app)
        assert "parameter 'box' is annotated GenerateRequest" in message


def test_two_fields_with_one_json_name_are_refused() -> None:
    def generate(max_tokens: int, maxTokens: int) -> str:
        return ""

    message = refusal(generate, "generate")
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

    message = refusal(pick, "pick")
    assert "enums Foo and FooBar both give the protobuf value name FOO_BAR_BAZ" in message
