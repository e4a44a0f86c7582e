"""The .proto text, pinned by golden files: a changed golden file is a wire change."""

from __future__ import annotations

import pytest

from blazerpc.target import load_app
from blazerpc.wire.proto_text import render_proto
from tests.apps.registry import GOLDEN, GOLDEN_APPS


@pytest.mark.parametrize("name", sorted(GOLDEN_APPS))
def test_schema_matches_golden_file(name: str, update_golden: bool) -> None:
    text = render_proto(load_app(GOLDEN_APPS[name]).schema)
    golden = GOLDEN / f"{name}.proto"
    if update_golden:
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_streaming_model_returns_a_stream() -> None:
    text = render_proto(load_app("examples.chat:app").schema)
    assert "rpc PredictGenerate(GenerateRequest) returns (stream GenerateResponse);" in text


def test_every_shape_is_spelled_as_protoc_expects() -> None:
    text = render_proto(load_app("tests.apps.every_type:app").schema)
    assert "rpc PredictBoxes(BoxesRequest) returns (BoxesResponse);" in text
    assert "rpc PredictCountUp(CountUpRequest) returns (stream CountUpResponse);" in text
    assert "rpc PredictTotal(stream TotalRequest) returns (TotalResponse);" in text
    assert (
        "rpc PredictEchoBoxes(stream EchoBoxesRequest) returns (stream EchoBoxesResponse);" in text
    )


def test_request_fields_tell_stock_clients_what_is_required_and_defaulted() -> None:
    text = render_proto(load_app("examples.chat:app").schema)
    assert "optional string prompt = 1;  // required" in text
    assert "optional int64 max_tokens = 2;  // default 32" in text


def test_constraints_are_kept_as_comments() -> None:
    text = render_proto(load_app("tests.apps.every_type:app").schema)
    assert "optional int64 top_k = 17;  // default 10; ge 1; le 100" in text


def test_docstrings_become_comments() -> None:
    text = render_proto(load_app("examples.detect:app").schema)
    assert "  // Find objects in an encoded image;" in text
    assert "// One detected object, in pixels.\nmessage Box {" in text
