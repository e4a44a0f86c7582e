"""Models as Open Inference Protocol tensors: the mapping, and every way an input can be wrong."""

from __future__ import annotations

import enum
import struct
from typing import Any

import msgspec
import pytest

from blazerpc import BlazeApp
from blazerpc.errors import ResultError, WireError
from blazerpc.openinference.protos import INFERENCE
from blazerpc.openinference.tensors import ModelTensors, tensors_of

Request = INFERENCE.classes["ModelInferRequest"]


class Color(enum.IntEnum):
    UNSPECIFIED = 0
    RED = 1
    BLUE = 2


class Box(msgspec.Struct):
    label: str
    score: float


def _tensors(name: str) -> ModelTensors:
    app = BlazeApp()

    @app.model("mixed")
    def mixed(
        count: int,
        ratios: list[float],
        tag: str,
        blob: bytes,
        color: Color = Color.RED,
        boxes: list[Box] = [],  # noqa: B006 (blazerpc copies defaults per call)
    ) -> Box:
        return Box(tag, 1.0)

    @app.model("plain")
    def plain(flags: list[bool]) -> list[int]:
        return [int(flag) for flag in flags]

    return tensors_of(app.schema, app.schema.model(name))


def _bytes(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def _request(*inputs: tuple[str, str, list[int]], raw: list[bytes] | None = None) -> Any:
    request: Any = Request(model_name="mixed")
    for name, datatype, shape in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw or [])
    return request


def test_the_mapping_reads_datatypes_and_shapes_off_the_schema() -> None:
    tensors = _tensors("mixed")
    assert [(s.name, s.datatype, s.shape) for s in tensors.inputs.values()] == [
        ("count", "INT64", (1,)),
        ("ratios", "FP64", (-1,)),
        ("tag", "BYTES", (1,)),
        ("blob", "BYTES", (1,)),
        ("color", "INT64", (1,)),
        ("boxes", "BYTES", (1,)),
    ]
    assert [(s.name, s.datatype) for s in tensors.outputs.values()] == [
        ("label", "BYTES"),
        ("score", "FP64"),
    ]


def test_raw_contents_decode_to_python_values_with_defaults() -> None:
    tensors = _tensors("mixed")
    request = _request(
        ("count", "INT64", [1]),
        ("ratios", "FP64", [2]),
        ("tag", "BYTES", [1]),
        ("blob", "BYTES", [1]),
        ("boxes", "BYTES", [1]),
        raw=[
            struct.pack("<q", 7),
            struct.pack("<2d", 0.5, 1.5),
            _bytes("héllo".encode()),
            _bytes(b"\x00\xff"),
            _bytes(b'[{"label": "cat", "score": 0.9}]'),
        ],
    )
    values = tensors.read_inputs(request.inputs, request.raw_input_contents)
    assert values == {
        "count": 7,
        "ratios": [0.5, 1.5],
        "tag": "héllo",
        "blob": b"\x00\xff",
        "color": Color.RED,
        "boxes": [Box("cat", 0.9)],
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x02\x03", "input 'count': 3 raw bytes is not a whole number of 8-byte INT64"),
        (b"", "input 'count' has shape [1], which holds 1 elements, but 0 were sent."),
    ],
)
def test_raw_numbers_of_the_wrong_size_are_refused(raw: bytes, message: str) -> None:
    request = _request(("count", "INT64", [1]), raw=[raw])
    with pytest.raises(WireError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _tensors("mixed").read_inputs(request.inputs, request.raw_input_contents)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x05\x00", "input 'tag': the raw BYTES end inside an element's length."),
        (b"\x05\x00\x00\x00ab", "input 'tag': a raw BYTES element declares 5 bytes, but only 2"),
        (_bytes(b"\xff\xfe"), "input 'tag' is not valid UTF-8 text."),
    ],
)
def test_malformed_raw_bytes_are_refused(raw: bytes, message: str) -> None:
    request = _request(("tag", "BYTES", [1]), raw=[raw])
    with pytest.raises(WireError) as error:
        _tensors("mixed").read_inputs(request.inputs, request.raw_input_contents)
    assert message in str(error.value)


def test_json_inputs_are_validated_with_the_field_path() -> None:
    request = _request(("boxes", "BYTES", [1]), raw=[_bytes(b'[{"label": "cat"}]')])
    with pytest.raises(WireError, match=r"field 'boxes\[0\].score' is required"):
        _tensors("mixed").read_inputs(request.inputs, request.raw_input_contents)


def test_an_enum_input_must_be_one_of_its_values() -> None:
    request = _request(("color", "INT64", [1]), raw=[struct.pack("<q", 9)])
    with pytest.raises(WireError, match="field 'color': invalid enum value 9"):
        _tensors("mixed").read_inputs(request.inputs, request.raw_input_contents)


def test_raw_contents_must_match_the_inputs_one_to_one() -> None:
    request = _request(("count", "INT64", [1]), ("tag", "BYTES", [1]), raw=[b"\x00" * 8])
    with pytest.raises(WireError, match="raw_input_contents has 1 entries for 2 inputs"):
        _tensors("mixed").read_inputs(request.inputs, request.raw_input_contents)


def test_outputs_are_little_endian_raw_contents_and_can_be_chosen() -> None:
    plain = _tensors("plain")
    ((name, datatype, shape, data),) = plain.write_outputs([1, -2])
    assert (name, datatype, shape) == ("result", "INT64", [2])
    assert struct.unpack("<2q", data) == (1, -2)
    mixed = _tensors("mixed")
    ((name, datatype, shape, data),) = mixed.write_outputs(Box("dog", 0.25), ["score"])
    assert (name, datatype, shape, struct.unpack("<d", data)) == ("score", "FP64", [1], (0.25,))
    with pytest.raises(WireError, match="output 'nope' is not an output of model 'mixed'"):
        mixed.write_outputs(Box("dog", 0.25), ["nope"])


def test_a_result_of_the_wrong_type_is_a_result_error() -> None:
    with pytest.raises(ResultError, match="output 'result'"):
        _tensors("plain").write_outputs(["one"])
