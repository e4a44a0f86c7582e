"""A pydantic v2 model, what every FastAPI user already has, as a parameter and result type:
a message like a Struct's on every transport, checked as strictly, with the model's own
validators run too."""

from __future__ import annotations

import datetime
import enum
import subprocess
import sys
import uuid
from typing import Annotated

import pytest
from grpclib.const import Status
from pydantic import BaseModel, Field, field_validator

from blazerpc import BlazeApp, BlazeClient, DefinitionError, RpcError
from blazerpc.wire.proto_text import render_proto

from .support import serve_http

pytestmark = pytest.mark.anyio


class Kind(enum.IntEnum):
    UNSPECIFIED = 0
    CAT = 1
    DOG = 2


class Box(BaseModel):
    """A box around something the model found."""

    x: Annotated[float, Field(ge=0)]
    label: str | None = None
    kind: Kind = Kind.CAT
    tags: list[str] = []
    seen: datetime.datetime | None = None

    @field_validator("label")
    @classmethod
    def no_shouting(cls, label: str | None) -> str | None:
        if label is not None and label.isupper():
            raise ValueError("labels are lower case")
        return label


class Found(BaseModel):
    boxes: list[Box]
    count: int = Field(ge=0)
    best: Box | None = None


def _app() -> BlazeApp:
    app = BlazeApp()

    @app.model("find")
    def find(box: Box, times: int = 1) -> Found:
        assert isinstance(box, Box)  # the function gets the user's class, not a dict
        boxes = [box] * times
        return Found(boxes=boxes, count=times, best=box if times else None)

    return app


async def test_a_pydantic_model_round_trips_over_grpc_http_and_open_inference() -> None:
    app = _app()
    seen = datetime.datetime(2026, 11, 30, 5, 0, tzinfo=datetime.UTC)
    box = Box(x=1.5, label="cat", tags=["a", "b"], seen=seen)
    async with serve_http(app) as served:
        port = served.server.port
        async with BlazeClient(port=port, app=app, timeout=5) as typed:
            with_app = await typed.predict("find", box=box, times=2)
        async with BlazeClient(port=port, timeout=5) as learned:  # through reflection
            without_app = await learned.predict("find", box={"x": 2.0, "kind": 2})
        http = await served.http.post(
            "/models/find", json={"box": {"x": 2, "kind": 2, "seen": "2026-11-30T05:00:00Z"}}
        )
        oip = await served.http.post("/v2/models/find/generate", json={"box": {"x": 3}})
    assert with_app == Found(boxes=[box, box], count=2, best=box)
    assert isinstance(with_app, Found) and with_app.boxes[0].kind is Kind.CAT
    assert without_app["count"] == 1
    assert without_app["boxes"] == [{"x": 2.0, "label": None, "kind": 2, "tags": [], "seen": None}]
    assert http.status_code == 200
    assert http.json() == {
        "result": {
            "boxes": [
                {"x": 2.0, "label": None, "kind": 2, "tags": [], "seen": "2026-11-30T05:00:00Z"}
            ],
            "count": 1,
            "best": {
                "x": 2.0,
                "label": None,
                "kind": 2,
                "tags": [],
                "seen": "2026-11-30T05:00:00Z",
            },
        }
    }
    assert oip.status_code == 200, oip.text
    assert oip.json()["count"] == 1 and oip.json()["boxes"][0]["x"] == 3.0


async def test_bad_values_are_refused_with_the_field_path_on_every_transport() -> None:
    app = _app()
    async with serve_http(app) as served:
        port = served.server.port
        async with BlazeClient(port=port, timeout=5) as client:
            with pytest.raises(RpcError) as negative:
                await client.predict("find", box={"x": -1.0})
            with pytest.raises(RpcError) as shouting:
                await client.predict("find", box={"x": 1.0, "label": "CAT"})
        text = await served.http.post("/models/find", json={"box": {"x": "3"}})
        unknown = await served.http.post("/models/find", json={"box": {"x": 3, "colour": "red"}})
        missing = await served.http.post("/models/find", json={"box": {}})
        nested = await served.http.post("/models/find", json={"box": {"x": 3, "tags": ["a", 7]}})
        served_after = await served.http.post("/models/find", json={"box": {"x": 3}})
    assert negative.value.status is Status.INVALID_ARGUMENT
    assert negative.value.message == "field 'box.x': expected float >= 0.0."
    assert shouting.value.status is Status.INVALID_ARGUMENT
    assert shouting.value.message == "field 'box.label': value error, labels are lower case."
    assert text.status_code == 400
    assert text.json()["message"] == "field 'box.x': expected float, got str."
    assert unknown.json()["message"] == (
        "field 'box.colour' is not in the schema; check its spelling against `blaze proto` "
        "or GET /models."
    )
    assert missing.json()["message"] == "field 'box.x' is required."
    assert nested.json()["message"] == "field 'box.tags[1]': expected str, got int."
    assert served_after.status_code == 200


def test_the_proto_and_the_json_schema_show_the_fields_and_their_constraints() -> None:
    app = _app()
    proto = render_proto(app.schema)
    assert "message Box {" in proto and "message Found {" in proto
    assert "double x = 1;" in proto and "repeated string tags = 4;" in proto
    assert "Kind kind = 3;" in proto and "google.protobuf.Timestamp seen = 5;" in proto


async def test_the_openapi_document_shows_the_models_as_components() -> None:
    app = _app()
    async with serve_http(app) as served:
        document = (await served.http.get("/openapi.json")).json()
        entry = (await served.http.get("/models/find")).json()
    components = document["components"]["schemas"]
    assert components["Box"]["properties"]["x"] == {"type": "number", "minimum": 0.0}
    assert components["Box"]["required"] == ["x"]
    assert components["Found"]["properties"]["boxes"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Box"},
    }
    assert entry["request"]["properties"]["box"] == {"$ref": "#/$defs/Box"}
    assert entry["request"]["$defs"]["Box"]["properties"]["x"]["minimum"] == 0.0


class Mislabelled(BaseModel):
    n: int = "three"  # type: ignore[assignment]  # the mistake under test


def test_a_field_default_that_does_not_fit_fails_at_import() -> None:
    app = BlazeApp()

    def count(box: Mislabelled) -> int:
        return 0

    with pytest.raises(DefinitionError) as err:
        app.model("count")(count)
    assert "model 'count'" in str(err.value)
    assert "field 'Mislabelled.n'" in str(err.value)
    assert "the default 'three'" in str(err.value)
    assert "Give it a default of that type, or change the annotation." in str(err.value)


class Unsendable(BaseModel):
    where: set[str]


def test_a_field_without_a_wire_form_is_refused_naming_it() -> None:
    app = BlazeApp()

    def count(box: Unsendable) -> int:
        return 0

    with pytest.raises(DefinitionError) as err:
        app.model("count")(count)
    assert "field 'Unsendable.where' is annotated set[str]" in str(err.value)
    assert "protobuf has no set type." in str(err.value)


def test_blazerpc_does_not_import_pydantic_itself() -> None:
    """pydantic is an optional extra: serving an app without it must not load it."""
    code = "import sys, blazerpc, blazerpc.server; print('pydantic' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


class Aliased(BaseModel):
    """FastAPI users give fields camelCase aliases for their JSON."""

    max_tokens: int = Field(alias="maxTokens")
    stop: list[str] = Field(default_factory=list)


async def test_fields_travel_under_their_python_names_whatever_their_aliases() -> None:
    app = BlazeApp()

    @app.model("settings")
    def settings(options: Aliased) -> Aliased:
        return options

    async with serve_http(app) as served:
        async with BlazeClient(port=served.server.port, app=app, timeout=5) as client:
            back = await client.predict("settings", options=Aliased(maxTokens=3))
        http = await served.http.post("/models/settings", json={"options": {"max_tokens": 4}})
    assert back == Aliased(maxTokens=3) and back.stop == []
    assert http.json() == {"result": {"max_tokens": 4, "stop": []}}


class Stamped(BaseModel):
    """Defaults a FastAPI user writes: a fresh id per request, one computed from another field,
    and an optional value with constraints."""

    a: int
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    b: int = Field(default_factory=lambda data: data["a"] * 2)
    temperature: float | None = Field(default=None, ge=0, le=2)


async def test_default_factories_run_per_call_and_optional_fields_keep_constraints() -> None:
    app = BlazeApp()

    @app.model("stamp")
    def stamp(request: Stamped) -> Stamped:
        assert request.model_fields_set == {"a"}  # what the caller sent, as pydantic counts
        return request

    async with serve_http(app) as served:
        first = await served.http.post("/models/stamp", json={"request": {"a": 1}})
        second = await served.http.post("/models/stamp", json={"request": {"a": 2}})
        warm = await served.http.post("/models/stamp", json={"request": {"a": 1, "temperature": 3}})
        async with BlazeClient(port=served.server.port, timeout=5) as learned:  # protobuf
            over_grpc = await learned.predict("stamp", request={"a": 5})
    one, two = first.json()["result"], second.json()["result"]
    assert one["request_id"] != two["request_id"]
    assert (one["b"], two["b"]) == (2, 4)
    assert over_grpc["b"] == 10 and len(over_grpc["request_id"]) == 32
    assert one["temperature"] is None
    assert warm.json()["message"] == "field 'request.temperature': expected float <= 2.0."


def test_a_root_model_is_refused_at_import_with_its_root_type_as_the_fix() -> None:
    from pydantic import RootModel

    class Tags(RootModel[list[str]]):
        pass

    app = BlazeApp()

    def tag(tags: Tags) -> int:
        return 0

    with pytest.raises(DefinitionError) as err:
        app.model("tag")(tag)
    assert "a pydantic RootModel" in str(err.value)
    assert "Annotate the parameter with its root type, list[str]" in str(err.value)
