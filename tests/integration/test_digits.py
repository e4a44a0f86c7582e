"""examples/digits.py: a real scikit-learn classifier, trained at start-up, called the ways a
user would (our client with numpy, stock grpcio, curl's JSON, the Open Inference Protocol),
unbatched and with adaptive batching."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import anyio
import numpy as np
import pytest
import tritonclient.grpc as triton
from sklearn.datasets import load_digits

from blazerpc.wire.protobuf import SchemaCodec
from examples.digits import app

from .support import serve_http, stock_unary

pytestmark = pytest.mark.anyio


async def test_both_models_classify_digits_from_every_client() -> None:
    digits = load_digits()
    images = digits.data[:48].astype(np.float32)
    classes = SchemaCodec(app.schema).classes
    async with serve_http(app) as served:
        one = await served.client.predict("digit", pixels=images[0])
        together = await asyncio.gather(
            *(served.client.predict("digit-batched", pixels=image) for image in images)
        )
        request: Any = classes["DigitRequest"]()
        request.pixels.dtype, request.pixels.data = "float32", images[1].tobytes()
        request.pixels.shape.append(64)
        stock: Any = await stock_unary(
            served.server.port,
            app.schema.rpc_path(app.schema.model("digit")),
            request,
            classes["DigitResponse"],
        )
        tensor = {
            "dtype": "float32",
            "shape": [64],
            "data": base64.b64encode(images[2].tobytes()).decode(),
        }
        curl = await served.http.post("/models/digit", json={"pixels": tensor})
        inference = await served.http.post(
            "/v2/models/digit-batched/infer",
            json={
                "inputs": [
                    {
                        "name": "pixels",
                        "datatype": "FP32",
                        "shape": [64],
                        "data": images[3].tolist(),
                    }
                ]
            },
        )
        stats = served.server.batch_stats["digit-batched"]
    right = sum(int(got == want) for got, want in zip(together, digits.target[:48], strict=True))
    assert right >= 46  # the forest saw these images in training: nearly all right
    assert one == digits.target[0] and stock.result == digits.target[1]
    assert curl.json() == {"result": int(digits.target[2])}
    assert inference.json()["outputs"][0]["data"] == [int(digits.target[3])]
    assert max(stats.sizes) > 1  # concurrent calls shared predict calls


async def test_tritonclient_classifies_a_batch_of_images_one_infer_each() -> None:
    digits = load_digits()
    images = digits.data[:8].astype(np.float32)
    async with serve_http(app) as served:
        client = triton.InferenceServerClient(f"127.0.0.1:{served.server.port}")

        def infer(image: np.ndarray) -> int:
            pixels = triton.InferInput("pixels", [64], "FP32")
            pixels.set_data_from_numpy(image)
            return int(client.infer("digit-batched", [pixels]).as_numpy("result")[0])

        try:
            labels = await asyncio.gather(
                *(anyio.to_thread.run_sync(infer, image) for image in images)
            )
        finally:
            client.close()
    assert labels == [int(label) for label in digits.target[:8]]
