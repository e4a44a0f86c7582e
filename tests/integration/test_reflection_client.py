"""BlazeClient without the app: the server's models learned through reflection."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import msgspec
import pytest

from blazerpc import BlazeApp, BlazeClient, BlazeServer, RpcError, Status
from examples import chat, detect, tracker, transcribe
from tests.apps import every_type

pytestmark = pytest.mark.anyio


def _plain(value: Any) -> Any:
    """A Struct or dataclass as the dict a client without the app receives."""
    if isinstance(value, msgspec.Struct):
        return {name: _plain(getattr(value, name)) for name in value.__struct_fields__}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


async def test_every_shape_of_the_examples_answers_the_same_without_the_app() -> None:
    calls: list[tuple[BlazeApp, str, Any]] = [
        (chat.app, "stream", ("generate", {"prompt": "a b c d", "max_tokens": 3})),
        (chat.app, "stream", ("generate-sync", {"prompt": "x y"})),
        (detect.app, "predict", ("detect", {"image": b"cat.jpg", "threshold": 0.0})),
        (transcribe.app, "send_stream", ("transcribe", [b"hel", b"lo ", b"world"])),
    ]
    for app, method, (model, arguments) in calls:
        async with BlazeServer(app, port=0) as server:
            async with BlazeClient(port=server.port, app=app, timeout=10) as typed:
                expected = await _call(typed, method, model, arguments)
            async with BlazeClient(port=server.port, timeout=10) as learned:
                assert await _call(learned, method, model, arguments) == _plain(expected)


async def _call(client: BlazeClient, method: str, model: str, arguments: Any) -> Any:
    if method == "predict":
        return await client.predict(model, **arguments)
    if method == "stream":
        return [item async for item in client.stream(model, **arguments)]
    return await client.send_stream(model, arguments)


async def test_a_bidirectional_stream_takes_dicts_and_typed_items() -> None:
    frames = [tracker.Frame([tracker.Point(0, 0), tracker.Point(100, 100)])]
    async with (
        BlazeServer(tracker.app, port=0) as server,
        BlazeClient(port=server.port, timeout=10) as client,
    ):
        answers = [a async for a in client.exchange("track", frames)]
        as_dicts = [{"detections": [{"x": 5, "y": 3}]}]
        fresh = [a async for a in client.exchange("track", as_dicts)]
    assert answers[0]["frame"] == 1 and len(answers[0]["tracks"]) == 2
    assert [(t["track_id"], t["age"]) for t in fresh[0]["tracks"]] == [(1, 1)]


async def test_every_type_round_trips_as_plain_values() -> None:
    when = datetime.datetime(2026, 11, 24, 12, 30, tzinfo=datetime.UTC)
    value = {
        "count": 3,
        "ratio": 0.25,
        "flag": True,
        "name": "n",
        "blob": b"\x00\x01",
        "scores": [1.5, 2.5],
        "ids": [1, 2],
        "flags": [True, False],
        "names": ["a"],
        "blobs": [b"b"],
        "boxes": [{"x": 1.0, "y": 2.0, "label": "cat"}],
        "labels": {"a": 1},
        "by_id": {7: {"x": 0.5, "y": 0.5, "label": None}},
        "color": every_type.Color.DARK_BLUE,
        "colors": [1, 0],
        "when": when,
        "took": datetime.timedelta(seconds=1.5),
        "point": {"lat": 1.0, "lon": 2.0},
        "matrix": [[1.0, 2.0], [3.0]],
        "groups": {"g": ["x", "y"]},
        "cube": [[[1, 2], [3]], [[4]]],
        "maybe": None,
        "bounded": 5,
        "code": "ABC",
    }
    async with (
        BlazeServer(every_type.app, port=0) as server,
        BlazeClient(port=server.port, timeout=10) as client,
    ):
        echoed = await client.predict("echo-all", value=value, count=1)
        assert await client.predict("matrix", rows=2) == every_type.matrix(2)
        assert await client.predict("maybe") is None
        assert [t async for t in client.stream("ticks", n=2)] == [
            t async for t in every_type.ticks(2)
        ]
    assert echoed == value | {"color": 2}


async def test_an_unknown_model_is_not_found_and_lists_the_rpcs() -> None:
    async with (
        BlazeServer(chat.app, port=0) as server,
        BlazeClient(port=server.port, timeout=10) as client,
    ):
        with pytest.raises(RpcError) as err:
            await client.predict("summarize", text="x")
        assert err.value.status is Status.NOT_FOUND
        assert "PredictGenerate" in err.value.message
        assert [t async for t in client.stream("generate", prompt="a b")] == ["a", "b"]


async def test_a_server_without_reflection_says_to_pass_the_app() -> None:
    async with BlazeServer(chat.app, port=0, reflection=False) as server:
        with pytest.raises(RpcError) as err:
            async with BlazeClient(port=server.port, timeout=10):
                pass
    assert err.value.status is Status.FAILED_PRECONDITION
    assert "--no-reflection" in err.value.message and "app=" in err.value.message
