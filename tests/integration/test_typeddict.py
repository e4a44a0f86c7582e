"""A TypedDict, what many users already have, as a parameter and result type: a message like a
Struct's, on every transport."""

from __future__ import annotations

from typing import TypedDict

import pytest

from blazerpc import BlazeApp, BlazeClient, DefinitionError

from .support import serve_http

pytestmark = pytest.mark.anyio


class Box(TypedDict):
    x: float
    label: str | None


class Found(TypedDict):
    boxes: list[Box]
    count: int


def _app() -> BlazeApp:
    app = BlazeApp()

    @app.model("find")
    def find(box: Box, times: int = 1) -> Found:
        return {"boxes": [box] * times, "count": times}

    return app


async def test_a_typeddict_round_trips_over_grpc_http_and_open_inference() -> None:
    app = _app()
    async with serve_http(app) as served:
        port = served.server.port
        async with BlazeClient(port=port, app=app, timeout=5) as typed:
            with_app = await typed.predict("find", box={"x": 1.5, "label": None}, times=2)
        async with BlazeClient(port=port, timeout=5) as learned:  # through reflection
            without_app = await learned.predict("find", box={"x": 1.5, "label": "a"})
        http = await served.http.post("/models/find", json={"box": {"x": 2, "label": "b"}})
        oip = await served.http.post(
            "/v2/models/find/generate", json={"box": {"x": 2, "label": None}}
        )
    assert with_app == {"boxes": [{"x": 1.5, "label": None}] * 2, "count": 2}
    assert without_app == {"boxes": [{"x": 1.5, "label": "a"}], "count": 1}
    assert http.json() == {"result": {"boxes": [{"x": 2.0, "label": "b"}], "count": 1}}
    assert oip.json()["boxes"] == [{"x": 2.0, "label": None}] and oip.json()["count"] == 1


class Partial(TypedDict, total=False):
    x: float


def test_a_typeddict_that_may_leave_out_keys_is_refused_at_import() -> None:
    app = BlazeApp()

    def locate(box: Partial) -> int:
        return 0

    with pytest.raises(DefinitionError) as err:
        app.model("locate")(locate)
    assert "Partial may leave out 'x'" in str(err.value)
    assert "Make those keys required and `X | None` if they may be empty." in str(err.value)
