"""The codec: every type round-trips, and every bad byte or value is an error naming its field."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import msgspec
import pytest

from blazerpc import BlazeApp
from blazerpc.errors import WireError
from blazerpc.wire.protobuf import SchemaCodec
from examples.chat import app as chat_app
from tests.apps.every_type import Box, Color, Everything, Mode, Node, Point, app

CODEC = SchemaCodec(app.schema)
ECHO_ALL = CODEC.models["echo-all"]
GENERATE = SchemaCodec(chat_app.schema).models["generate"].request


def everything(**changes: object) -> Everything:
    value = Everything(
        count=-(2**63),
        ratio=0.1,
        flag=True,
        name="żółw",
        blob=b"\x00\xff",
        scores=[1.5, -2.0],
        ids=[2**63 - 1, 0],
        flags=[True, False],
        names=["a", ""],
        blobs=[b"", b"x"],
        boxes=[Box(1, 2, "cat"), Box(3, 4)],
        labels={"a": 1, "": 0},
        by_id={7: Box(0, 0)},
        color=Color.DARK_BLUE,
        colors=[Color.RED, Color.UNSPECIFIED],
        when=datetime.datetime(2026, 11, 24, 9, 30, 0, 123456, tzinfo=datetime.UTC),
        took=datetime.timedelta(seconds=90, microseconds=5),
        point=Point(lat=52.2, lon=21.0),
        matrix=[[1.0, 2.0], [], [3.0]],
        groups={"g": ["x", "y"], "empty": []},
        cube=[[[1, 2], [3]], []],
        maybe=0,
        bounded=10,
        code="ABC",
    )
    return msgspec.structs.replace(value, **changes)


def test_every_type_round_trips_through_the_response() -> None:
    value = everything()
    assert ECHO_ALL.response.decode(ECHO_ALL.response.encode({"result": value})) == {
        "result": value
    }


def test_request_fields_left_out_take_their_python_defaults() -> None:
    decoded = ECHO_ALL.request.decode(ECHO_ALL.request.encode({"value": everything(), "count": 0}))
    assert decoded["count"] == 0  # sent as zero: present, not defaulted
    assert decoded["ratio"] == 0.5
    assert decoded["name"] == "anon"
    assert decoded["color"] is Color.RED
    assert decoded["mode"] is Mode.FAST
    assert decoded["when"] is None
    assert decoded["box"] is None
    assert decoded["scores"] == []
    assert decoded["top_k"] == 10


def test_zero_values_are_kept_apart_from_missing_ones() -> None:
    decoded = GENERATE.decode(GENERATE.encode({"prompt": "", "max_tokens": 0}))
    assert decoded == {"prompt": "", "max_tokens": 0}
    assert GENERATE.decode(GENERATE.encode({"prompt": ""})) == {"prompt": "", "max_tokens": 32}


def test_recursive_messages_round_trip() -> None:
    tree = Node(1, children=[Node(2, children=[Node(3)])], parent=Node(0))
    data = ECHO_ALL.request.encode({"value": everything(), "count": 1, "tree": tree})
    assert ECHO_ALL.request.decode(data)["tree"] == tree


def test_a_missing_required_parameter_is_named() -> None:
    with pytest.raises(WireError, match=r"field 'prompt' is required: set GenerateRequest.prompt"):
        GENERATE.decode(b"")


def test_a_missing_required_nested_field_is_named_by_its_path() -> None:
    boxes = CODEC.classes["Box"]
    body: Any = CODEC.classes["EchoAllRequest"](count=1)  # a raw protobuf message
    body.value.boxes.append(boxes(x=1, y=1))
    body.value.boxes.append(boxes(x=1))
    with pytest.raises(WireError, match=r"field 'value.boxes\[1\].y' is required"):
        ECHO_ALL.request.decode(body.SerializeToString())


def test_a_broken_constraint_is_named() -> None:
    data = ECHO_ALL.request.encode({"value": everything(), "count": 1, "top_k": 0})
    with pytest.raises(WireError, match=r"field 'top_k': expected int >= 1\."):
        ECHO_ALL.request.decode(data)
    nested = ECHO_ALL.request.encode({"value": everything(code="abc"), "count": 1})
    with pytest.raises(WireError, match=r"field 'value.code': expected str matching regex"):
        ECHO_ALL.request.decode(nested)


def test_an_unknown_enum_number_is_named() -> None:
    colors = SchemaCodec(app.schema).models["colors"].request
    with pytest.raises(WireError, match=r"field 'color': invalid enum value 9"):
        colors.decode(b"\x08\x09")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\x10\x80", "not a valid GenerateRequest message (Wire format was corrupt)"),
        (b"\x0a\x02\xff\xfe", "not a valid GenerateRequest message (String field had bad UTF-8)"),
        (b"\x0a\x05ab", "not a valid GenerateRequest message (Wire format was corrupt)"),
        (b"\x08\x05", "field 'prompt': expected string, got a varint"),
        (b"\x0a\x01a\x12\x01b", "field 'max_tokens': expected int64, got a length-delimited value"),
    ],
)
def test_malformed_bytes_are_wire_errors(body: bytes, expected: str) -> None:
    with pytest.raises(WireError) as err:
        GENERATE.decode(body)
    assert expected in str(err.value)


def test_unknown_field_numbers_are_ignored_for_forward_compatibility() -> None:
    newer_client = b"\x0a\x01a" + b"\x48\x01"  # field 9, from a newer schema
    assert GENERATE.decode(newer_client) == {"prompt": "a", "max_tokens": 32}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([Box(1, 2), Box("x", 2)], "field 'result[1].x': cannot send str 'x' as double"),  # type: ignore[arg-type]
        ([Point(1.0)], "field 'result[0]': expected Box, got Point"),
        ("boxes", "field 'result': cannot send str 'boxes' as repeated Box"),
    ],
)
def test_a_wrongly_typed_value_is_named_when_encoding(value: object, expected: str) -> None:
    with pytest.raises(WireError) as err:
        CODEC.models["boxes"].response.encode({"result": value})
    assert expected in str(err.value)


def test_an_integer_beyond_int64_is_refused() -> None:
    with pytest.raises(WireError, match="field 'max_tokens'"):
        GENERATE.encode({"prompt": "a", "max_tokens": 2**63})


def test_none_where_the_annotation_does_not_allow_it_is_refused() -> None:
    with pytest.raises(WireError, match=r"field 'result': expected int64, got None"):
        CODEC.models["count.up"].response.encode({"result": None})
    with pytest.raises(WireError, match=r"field 'result\[0\].x': expected double, got None"):
        CODEC.models["boxes"].response.encode({"result": [Box(x=None, y=1.0)]})  # type: ignore[arg-type]
    assert CODEC.models["maybe"].response.encode({"result": None}) == b""


def test_a_timestamp_beyond_datetimes_range_is_a_wire_error() -> None:
    ticks = CODEC.models["ticks"].response
    body: Any = CODEC.classes["TicksResponse"]()
    body.result.seconds = 2**62
    with pytest.raises(WireError, match=r"field 'result': "):
        ticks.decode(body.SerializeToString())


class Stamped(msgspec.Struct):
    at: Annotated[datetime.datetime, msgspec.Meta(tz=False)]


def test_a_naive_datetime_constraint_gets_naive_utc() -> None:
    local = BlazeApp()

    @local.model("stamp")
    def stamp(event: Stamped) -> int:
        return 0

    request = SchemaCodec(local.schema).models["stamp"].request
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert request.decode(request.encode({"event": Stamped(when)})) == {"event": Stamped(when)}
