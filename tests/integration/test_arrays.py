"""numpy arrays as parameters and results: typed service, HTTP, and the Open Inference Protocol."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import anyio.to_thread
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from blazerpc import BlazeApp, BlazeClient, BlazeServer, DefinitionError, Tensor, WireError
from blazerpc.wire.proto_text import render_proto

from .support import serve_http

pytestmark = pytest.mark.anyio
Pixels = Annotated[np.ndarray, Tensor("uint8", (-1, 4))]
Means = Annotated[np.ndarray, Tensor("float32", (-1,))]


class Seen:
    """What the model received: whether its array was a view over the request's bytes."""

    def __init__(self) -> None:
        self.was_view: list[bool] = []


def make_app(seen: Seen) -> BlazeApp:
    app = BlazeApp()

    @app.model("row-means")
    def row_means(pixels: Pixels, scale: float = 1.0) -> Means:
        """Each row's mean, scaled."""
        seen.was_view.append(not pixels.flags.owndata and not pixels.flags.writeable)
        means: np.ndarray = (pixels.mean(axis=1) * scale).astype(np.float32)
        return means

    return app


async def test_the_typed_service_sends_arrays_as_tensor_messages() -> None:
    seen = Seen()
    app = make_app(seen)
    async with (
        BlazeServer(app, port=0) as server,
        BlazeClient(port=server.port, app=app, timeout=5) as client,
    ):
        pixels = np.array([[0, 2, 4, 6], [1, 1, 1, 1]], dtype=np.uint8)
        means = await client.predict("row-means", pixels=pixels, scale=2.0)
        assert means.dtype == np.float32 and means.tolist() == [6.0, 2.0]
        assert seen.was_view == [True]  # read without a copy
        with pytest.raises(WireError, match="field 'pixels': expected a numpy array, got bytes"):
            await client.predict("row-means", pixels=b"not an array")
        wrong = np.zeros((2, 3), dtype=np.uint8)
        with pytest.raises(WireError, match=r"expected uint8 \[-1, 4\], got uint8 \[2, 3\]"):
            await client.predict("row-means", pixels=wrong)


async def test_tritonclient_sends_raw_tensors_and_bad_ones_name_the_input() -> None:
    seen = Seen()
    async with BlazeServer(make_app(seen), port=0) as server:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:

            def infer(array: Any, datatype: str = "UINT8") -> Any:
                tensor = triton.InferInput("pixels", list(array.shape), datatype)
                tensor.set_data_from_numpy(array)
                return client.infer("row-means", [tensor]).as_numpy("result")

            pixels = np.arange(8, dtype=np.uint8).reshape(2, 4)
            result = await anyio.to_thread.run_sync(infer, pixels)
            assert result.dtype == np.float32 and result.tolist() == [1.5, 5.5]
            assert seen.was_view == [True]
            metadata = await anyio.to_thread.run_sync(
                lambda: client.get_model_metadata("row-means", as_json=True)
            )
            assert metadata["inputs"][0] == {
                "name": "pixels",
                "datatype": "UINT8",
                "shape": ["-1", "4"],
            }
            for bad, datatype, message in [
                (np.zeros((2, 4), dtype=np.float32), "FP32", "has datatype FP32; it takes UINT8"),
                (
                    np.zeros((2, 3), dtype=np.uint8),
                    "UINT8",
                    "has shape [2, 3]; it takes uint8 [-1, 4]",
                ),
            ]:
                with pytest.raises(InferenceServerException) as error:
                    await anyio.to_thread.run_sync(infer, bad, datatype)
                assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
                assert f"input 'pixels' {message}" in error.value.message()
        finally:
            client.close()


async def test_arrays_over_http_json_and_v2_rest() -> None:
    seen = Seen()
    async with serve_http(make_app(seen)) as served:
        http = served.http
        raw = np.array([[2, 2, 2, 2]], dtype=np.uint8).tobytes()
        body = {
            "pixels": {"dtype": "uint8", "shape": [1, 4], "data": base64.b64encode(raw).decode()}
        }
        answer = (await http.post("/models/row-means", json=body)).json()["result"]
        assert (answer["dtype"], answer["shape"]) == ("float32", [1])
        assert np.frombuffer(base64.b64decode(answer["data"]), dtype="<f4").tolist() == [2.0]
        short = {
            "pixels": {"dtype": "uint8", "shape": [1, 4], "data": base64.b64encode(b"ab").decode()}
        }
        refused = await http.post("/models/row-means", json=short)
        assert refused.status_code == 400
        assert "which is 4 bytes, but 2 bytes were sent" in refused.json()["message"]
        v2 = {
            "inputs": [
                {
                    "name": "pixels",
                    "datatype": "UINT8",
                    "shape": [2, 4],
                    "data": [[1, 1, 1, 1], [3, 3, 3, 3]],
                }
            ]
        }
        outputs = (await http.post("/v2/models/row-means/infer", json=v2)).json()["outputs"]
        assert outputs == [{"name": "result", "datatype": "FP32", "shape": [2], "data": [1.0, 3.0]}]


def test_an_array_needs_its_dtype_and_stands_alone() -> None:
    app = BlazeApp()
    with pytest.raises(DefinitionError, match=r"Annotated\[np.ndarray, Tensor\(\"float32\"\)\]"):

        @app.model("bare")
        def bare(x: np.ndarray) -> int:
            return 0

    with pytest.raises(DefinitionError, match="not an item of a list"):

        @app.model("listed")
        def listed(xs: list[Annotated[np.ndarray, Tensor("float32")]]) -> int:
            return 0

    with pytest.raises(DefinitionError, match="the dtype is one of bool, uint8"):
        Tensor("float128")


def _three_tensor_models() -> BlazeApp:
    app = BlazeApp()

    @app.model("row-means")
    def row_means(pixels: Pixels) -> Means:
        means: np.ndarray = pixels.mean(axis=1).astype(np.float32)
        return means

    @app.model("double")
    def double(values: Means) -> Means:
        doubled: np.ndarray = values * 2
        return doubled

    @app.model("total")
    def total(values: Means) -> float:
        return float(values.sum())

    return app


async def test_three_tensor_models_share_one_tensor_message() -> None:
    app = _three_tensor_models()
    values = np.array([1.0, 2.5], dtype=np.float32)
    async with (
        BlazeServer(app, port=0) as server,
        BlazeClient(port=server.port, app=app, timeout=5) as client,
    ):
        means = await client.predict("row-means", pixels=np.ones((2, 4), dtype=np.uint8))
        doubled = await client.predict("double", values=values)
        summed = await client.predict("total", values=values)
        triton_client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            tensor = triton.InferInput("values", [2], "FP32")
            tensor.set_data_from_numpy(values)
            answer = await anyio.to_thread.run_sync(lambda: triton_client.infer("double", [tensor]))
        finally:
            triton_client.close()
    assert means.tolist() == [1.0, 1.0]
    assert doubled.tolist() == [2.0, 5.0]
    assert summed == 3.5
    assert answer.as_numpy("result").tolist() == [2.0, 5.0]
    assert render_proto(app.schema).count("message Tensor {") == 1


async def test_a_client_without_the_app_sends_and_gets_numpy_arrays() -> None:
    values = np.array([1.0, 2.5], dtype=np.float32)
    async with (
        BlazeServer(_three_tensor_models(), port=0) as server,
        BlazeClient(port=server.port, timeout=5) as client,  # the schema, from reflection
    ):
        doubled = await client.predict("double", values=values)
        means = await client.predict("row-means", pixels=np.ones((2, 4), dtype=np.uint8))
    assert isinstance(doubled, np.ndarray)
    assert doubled.dtype == np.float32 and doubled.tolist() == [2.0, 5.0]
    assert means.tolist() == [1.0, 1.0]
