"""The type table of docs/types.md, row by row, read through `@app.model` as a user would; and
every annotation outside it refused with a fix."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable
from typing import Annotated, Any, NewType, Optional

import msgspec
import pytest

from blazerpc import BlazeApp
from blazerpc.schema.spec import (
    EnumRef,
    EnumSpec,
    FieldSpec,
    Label,
    MessageKind,
    MessageRef,
    Scalar,
    ValueType,
    WellKnown,
)

from ..refusal import refusal


class Level(enum.IntEnum):
    HIGH = 2
    OFF = 0
    LOW = 1


class TrafficLight(enum.Enum):
    RED = 1
    UNSPECIFIED = 0
    DARK_GREEN = 2


class Box(msgspec.Struct):
    x: float
    y: float
    label: str | None = None


@dataclasses.dataclass
class Point:
    lat: float
    lon: float = 0.0


class Scene(msgspec.Struct):
    boxes: list[Box]
    origin: Point


class Node(msgspec.Struct):
    value: int
    children: list[Node] = []
    parent: Node | None = None


UserId = NewType("UserId", int)
Ids = NewType("Ids", list[int])


def _summary(spec: FieldSpec) -> dict[str, object]:
    """What a field looks like on the wire and to a caller."""
    return {
        "label": spec.label,
        "value_type": spec.value_type,
        "key_type": spec.key_type,
        "is_nullable": spec.is_nullable,
        "is_proto3_optional": spec.is_proto3_optional,
        "constraints": spec.constraints,
    }


def _expected(
    label: Label,
    value_type: ValueType,
    *,
    key_type: Scalar | None = None,
    is_nullable: bool = False,
    is_proto3_optional: bool = False,
    constraints: tuple[tuple[str, object], ...] = (),
) -> dict[str, object]:
    return {
        "label": label,
        "value_type": value_type,
        "key_type": key_type,
        "is_nullable": is_nullable,
        "is_proto3_optional": is_proto3_optional,
        "constraints": constraints,
    }


def _enum(app: BlazeApp, name: str) -> EnumSpec:
    return next(spec for spec in app.schema.enums if spec.name == name)


def test_int_is_int64() -> None:
    app = BlazeApp()

    @app.model("count")
    def count(n: int) -> int:
        return n

    assert _summary(app.registry["count"].request.fields[0]) == _expected(
        Label.SINGULAR, Scalar.INT64, is_proto3_optional=True
    )


def test_float_is_double_never_32_bit_float() -> None:
    app = BlazeApp()

    @app.model("scale")
    def scale(ratio: float) -> float:
        return ratio

    model = app.registry["scale"]
    assert _summary(model.request.fields[0]) == _expected(
        Label.SINGULAR, Scalar.DOUBLE, is_proto3_optional=True
    )
    assert model.response.fields[0].value_type is Scalar.DOUBLE
    assert Scalar.DOUBLE.value == "double"
    assert "float" not in {scalar.value for scalar in Scalar}


def test_bool_is_bool() -> None:
    app = BlazeApp()

    @app.model("toggle")
    def toggle(flag: bool) -> bool:
        return flag

    assert _summary(app.registry["toggle"].request.fields[0]) == _expected(
        Label.SINGULAR, Scalar.BOOL, is_proto3_optional=True
    )


def test_str_is_string() -> None:
    app = BlazeApp()

    @app.model("echo")
    def echo(text: str) -> str:
        return text

    assert _summary(app.registry["echo"].request.fields[0]) == _expected(
        Label.SINGULAR, Scalar.STRING, is_proto3_optional=True
    )


def test_bytes_is_bytes() -> None:
    app = BlazeApp()

    @app.model("blob")
    def blob(data: bytes) -> bytes:
        return data

    assert _summary(app.registry["blob"].request.fields[0]) == _expected(
        Label.SINGULAR, Scalar.BYTES, is_proto3_optional=True
    )


def test_list_is_repeated_item_type() -> None:
    app = BlazeApp()

    @app.model("lists")
    def lists(scores: list[float], names: list[str], boxes: list[Box]) -> int:
        return 0

    scores, names, boxes = app.registry["lists"].request.fields
    assert _summary(scores) == _expected(Label.REPEATED, Scalar.DOUBLE)
    assert _summary(names) == _expected(Label.REPEATED, Scalar.STRING)
    assert _summary(boxes) == _expected(Label.REPEATED, MessageRef("Box"))


def test_dict_with_str_or_int_keys_is_a_map() -> None:
    app = BlazeApp()

    @app.model("maps")
    def maps(weights: dict[str, float], by_id: dict[int, Box]) -> int:
        return 0

    weights, by_id = app.registry["maps"].request.fields
    assert _summary(weights) == _expected(Label.MAP, Scalar.DOUBLE, key_type=Scalar.STRING)
    assert _summary(by_id) == _expected(Label.MAP, MessageRef("Box"), key_type=Scalar.INT64)


def test_optional_is_nullable_and_proto3_optional() -> None:
    app = BlazeApp()

    @app.model("maybe")
    def maybe(
        count: int | None,
        name: Optional[str] = None,  # noqa: UP045 - the Optional spelling is the row under test
        box: Box | None = None,
    ) -> float | None:
        return None

    model = app.registry["maybe"]
    count, name, box = model.request.fields
    assert _summary(count) == _expected(
        Label.SINGULAR, Scalar.INT64, is_nullable=True, is_proto3_optional=True
    )
    assert _summary(name) == _expected(
        Label.SINGULAR, Scalar.STRING, is_nullable=True, is_proto3_optional=True
    )
    # a message field has presence without `optional`
    assert _summary(box) == _expected(Label.SINGULAR, MessageRef("Box"), is_nullable=True)
    assert _summary(model.response.fields[0]) == _expected(
        Label.SINGULAR, Scalar.DOUBLE, is_nullable=True, is_proto3_optional=True
    )


def test_int_enum_is_an_enum_with_prefixed_values_and_zero_first() -> None:
    app = BlazeApp()

    @app.model("level")
    def level(value: Level) -> int:
        return int(value)

    assert _summary(app.registry["level"].request.fields[0]) == _expected(
        Label.SINGULAR, EnumRef("Level"), is_proto3_optional=True
    )
    values = _enum(app, "Level").values
    assert [(v.name, v.number) for v in values] == [
        ("LEVEL_OFF", 0),
        ("LEVEL_HIGH", 2),
        ("LEVEL_LOW", 1),
    ]


def test_int_valued_enum_gets_an_upper_snake_prefix_and_zero_first() -> None:
    app = BlazeApp()

    @app.model("light")
    def light(state: TrafficLight = TrafficLight.RED) -> TrafficLight:
        return state

    model = app.registry["light"]
    assert _summary(model.request.fields[0]) == _expected(
        Label.SINGULAR, EnumRef("TrafficLight"), is_proto3_optional=True
    )
    assert model.response.fields[0].value_type == EnumRef("TrafficLight")
    enum_spec = _enum(app, "TrafficLight")
    assert enum_spec.python_type is TrafficLight
    assert [(v.name, v.number) for v in enum_spec.values] == [
        ("TRAFFIC_LIGHT_UNSPECIFIED", 0),
        ("TRAFFIC_LIGHT_RED", 1),
        ("TRAFFIC_LIGHT_DARK_GREEN", 2),
    ]
    assert len(app.schema.enums) == 1


def test_struct_and_dataclass_are_messages_named_after_the_class_recursively() -> None:
    app = BlazeApp()

    @app.model("detect")
    def detect(scene: Scene) -> Box:
        return scene.boxes[0]

    model = app.registry["detect"]
    assert _summary(model.request.fields[0]) == _expected(Label.SINGULAR, MessageRef("Scene"))
    assert model.response.fields[0].value_type == MessageRef("Box")

    scene = app.schema.message("Scene")
    assert (scene.kind, scene.python_type) == (MessageKind.STRUCT, Scene)
    assert [(f.name, f.number) for f in scene.fields] == [("boxes", 1), ("origin", 2)]
    assert _summary(scene.field_named("boxes")) == _expected(Label.REPEATED, MessageRef("Box"))
    assert _summary(scene.field_named("origin")) == _expected(Label.SINGULAR, MessageRef("Point"))

    box = app.schema.message("Box")
    assert _summary(box.field_named("x")) == _expected(
        Label.SINGULAR, Scalar.DOUBLE, is_proto3_optional=True
    )
    assert _summary(box.field_named("label")) == _expected(
        Label.SINGULAR, Scalar.STRING, is_nullable=True, is_proto3_optional=True
    )

    point = app.schema.message("Point")
    assert (point.kind, point.python_type) == (MessageKind.STRUCT, Point)
    assert [(f.name, f.value_type) for f in point.fields] == [
        ("lat", Scalar.DOUBLE),
        ("lon", Scalar.DOUBLE),
    ]
    assert point.field_named("lon").default == 0.0


def test_a_class_used_by_two_models_is_one_message() -> None:
    app = BlazeApp()

    @app.model("detect")
    def detect(scene: Scene) -> list[Box]:
        return scene.boxes

    @app.model("area")
    def area(box: Box) -> float:
        return box.x * box.y

    names = [message.name for message in app.schema.messages]
    assert names.count("Box") == 1
    assert names.count("Scene") == 1
    assert names.count("Point") == 1


def test_datetime_is_timestamp_and_timedelta_is_duration() -> None:
    app = BlazeApp()

    @app.model("schedule")
    def schedule(at: datetime.datetime, every: datetime.timedelta) -> datetime.datetime:
        return at + every

    at, every = app.registry["schedule"].request.fields
    assert _summary(at) == _expected(Label.SINGULAR, WellKnown.TIMESTAMP)
    assert _summary(every) == _expected(Label.SINGULAR, WellKnown.DURATION)
    assert app.schema.imports == (
        "google/protobuf/duration.proto",
        "google/protobuf/timestamp.proto",
    )


def test_annotated_with_meta_is_the_inner_type_with_its_constraints_kept() -> None:
    app = BlazeApp()

    @app.model("sample")
    def sample(
        top_k: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5,
        code: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] | None = None,
    ) -> int:
        return top_k

    top_k, code = app.registry["sample"].request.fields
    assert _summary(top_k) == _expected(
        Label.SINGULAR, Scalar.INT64, is_proto3_optional=True, constraints=(("ge", 1), ("le", 10))
    )
    assert top_k.default == 5
    assert _summary(code) == _expected(
        Label.SINGULAR,
        Scalar.STRING,
        is_nullable=True,
        is_proto3_optional=True,
        constraints=(("pattern", "^[A-Z]{3}$"),),
    )


def test_a_list_of_lists_is_a_repeated_wrapper_message() -> None:
    app = BlazeApp()

    @app.model("matrix")
    def matrix(rows: list[list[float]]) -> list[list[float]]:
        return rows

    model = app.registry["matrix"]
    assert _summary(model.request.fields[0]) == _expected(Label.REPEATED, MessageRef("DoubleList"))
    assert model.response.fields[0].value_type == MessageRef("DoubleList")
    wrapper = app.schema.message("DoubleList")
    assert wrapper.kind is MessageKind.WRAPPER
    assert [(f.name, f.number) for f in wrapper.fields] == [("items", 1)]
    assert _summary(wrapper.fields[0]) == _expected(Label.REPEATED, Scalar.DOUBLE)
    assert [message.name for message in app.schema.messages].count("DoubleList") == 1


def test_a_map_of_lists_maps_to_a_wrapper_message() -> None:
    app = BlazeApp()

    @app.model("groups")
    def groups(members: dict[str, list[str]]) -> int:
        return len(members)

    assert _summary(app.registry["groups"].request.fields[0]) == _expected(
        Label.MAP, MessageRef("StringList"), key_type=Scalar.STRING
    )
    wrapper = app.schema.message("StringList")
    assert wrapper.kind is MessageKind.WRAPPER
    assert _summary(wrapper.field_named("items")) == _expected(Label.REPEATED, Scalar.STRING)


def test_new_type_is_its_supertype() -> None:
    app = BlazeApp()

    @app.model("user")
    def user(user_id: UserId, manager: UserId | None = None) -> UserId:
        return user_id

    model = app.registry["user"]
    user_id, manager = model.request.fields
    assert _summary(user_id) == _expected(Label.SINGULAR, Scalar.INT64, is_proto3_optional=True)
    assert _summary(manager) == _expected(
        Label.SINGULAR, Scalar.INT64, is_nullable=True, is_proto3_optional=True
    )
    assert model.response.fields[0].value_type is Scalar.INT64


def test_new_type_over_a_list_is_repeated() -> None:
    app = BlazeApp()

    @app.model("lookup")
    def lookup(ids: Ids) -> int:
        return len(ids)

    assert _summary(app.registry["lookup"].request.fields[0]) == _expected(
        Label.REPEATED, Scalar.INT64
    )


def test_new_type_over_int_is_a_map_key() -> None:
    app = BlazeApp()

    @app.model("names")
    def names(by_user: dict[UserId, str]) -> int:
        return len(by_user)

    assert _summary(app.registry["names"].request.fields[0]) == _expected(
        Label.MAP, Scalar.STRING, key_type=Scalar.INT64
    )


def test_recursive_struct_through_a_list_or_an_optional_field_is_accepted() -> None:
    app = BlazeApp()

    @app.model("tree")
    def tree(root: Node) -> int:
        return len(root.children)

    node = app.schema.message("Node")
    assert _summary(node.field_named("children")) == _expected(Label.REPEATED, MessageRef("Node"))
    assert _summary(node.field_named("parent")) == _expected(
        Label.SINGULAR, MessageRef("Node"), is_nullable=True
    )
    assert [message.name for message in app.schema.messages].count("Node") == 1


def test_a_parameter_default_is_kept_on_its_field() -> None:
    app = BlazeApp()

    @app.model("generate")
    def generate(
        prompt: str, max_tokens: int = 32, stop: str = "\n", level: Level = Level.LOW
    ) -> str:
        return prompt

    prompt, max_tokens, stop, level = app.registry["generate"].request.fields
    assert not prompt.has_default
    assert (max_tokens.has_default, max_tokens.default) == (True, 32)
    assert stop.default == "\n"
    assert level.default is Level.LOW


def test_only_singular_fields_without_default_or_none_are_required() -> None:
    app = BlazeApp()

    @app.model("mixed")
    def mixed(
        count: int,
        box: Box,
        at: datetime.datetime,
        maybe: int | None,
        scores: list[float],
        labels: dict[str, int],
        top_k: int = 3,
        hint: Box | None = None,
    ) -> int:
        return count

    required = {f.name for f in app.registry["mixed"].request.fields if f.is_required}
    assert required == {"count", "box", "at"}
    box = app.schema.message("Box")
    assert [(f.name, f.is_required) for f in box.fields] == [
        ("x", True),
        ("y", True),
        ("label", False),
    ]


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
    message = refusal(function)
    assert f"parameter {parameter!r} is annotated {annotation};" in message
    assert fix in message


def test_a_refused_annotation_inside_a_struct_names_the_field_path() -> None:
    def tag(opts: Options) -> int:
        return 0

    message = refusal(tag)
    path = "parameter 'opts' is annotated Options; field 'Options.tags' is annotated set[str];"
    assert path in message
    assert "Use list[str]" in message


def test_a_struct_that_requires_itself_is_refused() -> None:
    def walk(chain: Chain) -> int:
        return chain.value

    message = refusal(walk)
    assert "parameter 'chain' is annotated Chain; field 'Chain.next' is annotated Chain;" in message
    assert "Make the field optional (`Chain | None = None`)" in message
