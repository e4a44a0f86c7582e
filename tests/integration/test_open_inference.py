"""The Open Inference Protocol (KServe v2) through stock clients: tritonclient, and grpcio."""

from __future__ import annotations

import json
import queue
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from httpx_sse import aconnect_sse
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from blazerpc import BlazeApp, BlazeServer, Context
from examples import chat, tracker

from .support import WAIT_S, serve_http, stock_unary

pytestmark = pytest.mark.anyio
Results = queue.Queue[tuple[Any, Any]]


def make_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("add")
    def add(a: int, b: int = 10) -> int:
        return a + b

    @app.model("scale")
    def scale(values: list[float], factor: float = 2.0) -> list[float]:
        return [value * factor for value in values]

    @app.model("greet")
    def greet(name: str, excited: bool = False) -> str:
        return f"hello {name}" + ("!" if excited else "")

    @app.model("stamps")
    async def stamps(words: AsyncIterator[str], ctx: Context) -> AsyncIterator[str]:
        async for word in words:
            yield f"{ctx.timestamp}:{word}"

    return app


def int64(name: str, *values: int) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "INT64")
    tensor.set_data_from_numpy(np.array(values, dtype=np.int64))
    return tensor


def text(name: str, *values: str) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_))
    return tensor


async def in_thread(function: Callable[[], Any]) -> Any:
    return await anyio.to_thread.run_sync(function)


async def test_model_infer_through_tritonclient() -> None:
    async with BlazeServer(make_app(), port=0) as server:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            added = await in_thread(lambda: client.infer("add", [int64("a", 2), int64("b", 3)]))
            assert added.as_numpy("result").tolist() == [5]
            assert added.get_output("result").datatype == "INT64"
            defaulted = await in_thread(lambda: client.infer("add", [int64("a", 2)]))
            assert defaulted.as_numpy("result").tolist() == [12]
            values = triton.InferInput("values", [3], "FP64")
            values.set_data_from_numpy(np.array([1.0, 2.5, -1.0]))
            scaled = await in_thread(lambda: client.infer("scale", [values]))
            assert scaled.as_numpy("result").tolist() == [2.0, 5.0, -2.0]
            flag = triton.InferInput("excited", [1], "BOOL")
            flag.set_data_from_numpy(np.array([True]))
            greeted = await in_thread(lambda: client.infer("greet", [text("name", "ada"), flag]))
            assert greeted.as_numpy("result").tolist() == [b"hello ada!"]
        finally:
            client.close()


async def test_metadata_and_readiness_through_tritonclient() -> None:
    async with BlazeServer(make_app(), port=0) as server:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            assert await in_thread(client.is_server_live)
            assert await in_thread(client.is_server_ready)
            assert await in_thread(lambda: client.is_model_ready("add"))
            metadata = await in_thread(lambda: client.get_model_metadata("scale", as_json=True))
            assert metadata["versions"] == ["1"]
            assert metadata["inputs"] == [
                {"name": "values", "datatype": "FP64", "shape": ["-1"]},
                {"name": "factor", "datatype": "FP64", "shape": ["1"]},
            ]
            assert metadata["outputs"] == [{"name": "result", "datatype": "FP64", "shape": ["-1"]}]
            server_metadata = await in_thread(lambda: client.get_server_metadata(as_json=True))
            assert server_metadata["name"] == "blazerpc"
            with pytest.raises(InferenceServerException) as missing:
                await in_thread(lambda: client.get_model_metadata("nope"))
            assert missing.value.status() == "StatusCode.NOT_FOUND"
            assert "add, scale, greet, stamps" in missing.value.message()
        finally:
            client.close()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (lambda: [triton_fp32("a", 1.0)], "input 'a' has datatype FP32; it takes INT64."),
        (lambda: [int64("a", 1, 2)], "input 'a' has shape [2]; it takes one element, shape [1]."),
        (
            lambda: [int64("c", 1)],
            "input 'c' is not an input of model 'add'; its inputs are: a, b.",
        ),
        (lambda: [int64("b", 1)], "input 'a' is required: send it as INT64 with shape [1]."),
        (lambda: [shape_lies("a")], "input 'a' has shape [3]; it takes one element, shape [1]."),
    ],
    ids=["datatype", "shape", "unknown input", "missing input", "shape lies"],
)
async def test_bad_inputs_are_invalid_argument_naming_the_input(
    inputs: Callable[[], list[triton.InferInput]], message: str
) -> None:
    async with BlazeServer(make_app(), port=0) as server:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            with pytest.raises(InferenceServerException) as error:
                await in_thread(lambda: client.infer("add", inputs()))
            assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert message in error.value.message()
            ok = await in_thread(lambda: client.infer("add", [int64("a", 1)]))
            assert ok.as_numpy("result").tolist() == [11]
        finally:
            client.close()


def triton_fp32(name: str, value: float) -> triton.InferInput:
    tensor = triton.InferInput(name, [1], "FP32")
    tensor.set_data_from_numpy(np.array([value], dtype=np.float32))
    return tensor


def shape_lies(name: str, datatype: str = "INT64") -> triton.InferInput:
    """Declares 3 elements, carries 2."""
    tensor = triton.InferInput(name, [2], datatype)
    tensor.set_data_from_numpy(np.array([1, 2], dtype=np.int64 if datatype == "INT64" else float))
    tensor.set_shape([3])
    return tensor


async def test_a_data_count_that_does_not_match_the_shape_is_invalid_argument() -> None:
    async with BlazeServer(make_app(), port=0) as server:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            with pytest.raises(InferenceServerException) as error:
                await in_thread(lambda: client.infer("scale", [shape_lies("values", "FP64")]))
        finally:
            client.close()
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'values' has shape [3], which holds 3 elements, but 2 were sent." in (
        error.value.message()
    )


async def test_typed_contents_are_read_as_well_as_raw_ones() -> None:
    async with BlazeServer(make_app(), port=0) as server:
        request = service_pb2.ModelInferRequest(model_name="greet", id="typed-1")
        name = request.inputs.add(name="name", datatype="BYTES", shape=[1])
        name.contents.bytes_contents.append(b"grace")
        response = await stock_unary(
            server.port,
            "/inference.GRPCInferenceService/ModelInfer",
            request,
            service_pb2.ModelInferResponse,
        )
    assert response.id == "typed-1" and response.model_name == "greet"
    (raw,) = response.raw_output_contents
    (length,) = struct.unpack_from("<I", raw)
    assert raw[4 : 4 + length] == b"hello grace"


def stream_client(port: int) -> tuple[triton.InferenceServerClient, Results]:
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    results: Results = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    return client, results


def take(results: Results, count: int) -> list[tuple[Any, Any]]:
    return [results.get(timeout=5) for _ in range(count)]


async def test_tritonclient_streams_tokens_from_the_chat_example() -> None:
    async with BlazeServer(chat.app, port=0) as server:
        client, results = stream_client(server.port)
        try:
            client.async_stream_infer(
                "generate",
                [text("prompt", "the quick brown fox")],
                request_id="r1",
                enable_empty_final_response=True,
            )
            received = await in_thread(lambda: take(results, 5))
        finally:
            await in_thread(client.stop_stream)  # it waits for the server: not on the loop
            client.close()
    assert [error for _, error in received] == [None] * 5
    tokens = [r.as_numpy("result").tolist() for r, _ in received[:4]]
    assert tokens == [[b"the"], [b"quick"], [b"brown"], [b"fox"]]
    responses = [r.get_response() for r, _ in received]
    assert {response.id for response in responses} == {"r1"}
    finals = [response.parameters["triton_final_response"].bool_param for response in responses]
    assert finals == [False, False, False, False, True]
    assert not responses[-1].outputs


async def test_tritonclient_tracks_objects_with_the_tracker_example() -> None:
    async with BlazeServer(tracker.app, port=0) as server:
        client, results = stream_client(server.port)
        try:
            for number, x in enumerate([10.0, 12.0, 300.0]):
                frame = {"detections": [{"x": x, "y": 5.0}], "max_distance": 50.0}
                client.async_stream_infer(
                    "track", [text("frames", json.dumps(frame))], request_id=f"frame-{number}"
                )
            received = await in_thread(lambda: take(results, 3))
        finally:
            await in_thread(client.stop_stream)  # it waits for the server: not on the loop
            client.close()
    assert [error for _, error in received] == [None] * 3
    assert [r.get_response().id for r, _ in received] == ["frame-0", "frame-1", "frame-2"]
    assert [r.as_numpy("frame").tolist() for r, _ in received] == [[1], [2], [3]]
    tracks = [json.loads(r.as_numpy("tracks")[0]) for r, _ in received]
    assert [[t["track_id"] for t in frame] for frame in tracks] == [[1], [1], [2]]
    assert tracks[1][0]["age"] == 2  # the state lived from one request to the next


async def test_a_stream_is_pinned_to_its_first_model_and_survives_a_wrong_one() -> None:
    async with BlazeServer(make_app(), port=0) as server:
        client, results = stream_client(server.port)
        try:
            client.async_stream_infer("add", [int64("a", 1)], request_id="one")
            client.async_stream_infer("greet", [text("name", "x")], request_id="two")
            client.async_stream_infer("add", [int64("a", 2), int64("b", 2)], request_id="three")
            client.async_stream_infer("add", [int64("zz", 2)], request_id="four")
            client.async_stream_infer("add", [int64("a", 5)], request_id="five")
            received = await in_thread(lambda: take(results, 5))
        finally:
            await in_thread(client.stop_stream)  # it waits for the server: not on the loop
            client.close()
    (one, _), (_, wrong_model), (three, _), (_, bad_input), (five, _) = received
    assert one.as_numpy("result").tolist() == [11] and one.get_response().id == "one"
    assert "this stream serves model 'add'" in wrong_model.message()
    assert three.as_numpy("result").tolist() == [4]
    assert "INVALID_ARGUMENT: input 'zz' is not an input of model 'add'" in bad_input.message()
    assert five.as_numpy("result").tolist() == [15] and five.get_response().id == "five"


async def test_an_unknown_model_on_the_first_request_closes_the_stream() -> None:
    async with BlazeServer(make_app(), port=0) as server:
        client, results = stream_client(server.port)
        try:
            client.async_stream_infer("nope", [int64("a", 1)], request_id="first")
            ((result, error),) = await in_thread(lambda: take(results, 1))
        finally:
            await in_thread(client.stop_stream)  # it waits for the server: not on the loop
            client.close()
    assert result is None
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "there is no model named 'nope'" in error.message()


async def test_timestamps_are_counted_or_taken_from_the_request() -> None:
    async with BlazeServer(make_app(), port=0) as server:
        client, results = stream_client(server.port)
        try:
            client.async_stream_infer("stamps", [text("words", "a")])
            client.async_stream_infer("stamps", [text("words", "b")])
            client.async_stream_infer("stamps", [text("words", "c")], parameters={"timestamp": 40})
            client.async_stream_infer("stamps", [text("words", "d")])
            received = await in_thread(lambda: take(results, 4))
        finally:
            await in_thread(client.stop_stream)  # it waits for the server: not on the loop
            client.close()
    answers = [r.as_numpy("result")[0].decode() for r, _ in received]
    assert answers == ["0:a", "1:b", "40:c", "41:d"]
    stamps = [r.get_response().parameters["timestamp"].int64_param for r, _ in received]
    assert stamps == [0, 1, 40, 41]


async def test_open_inference_can_be_turned_off() -> None:
    async with BlazeServer(make_app(), port=0, open_inference=False) as server:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            with pytest.raises(InferenceServerException) as error:
                await in_thread(client.is_server_live)
            assert error.value.status() == "StatusCode.UNIMPLEMENTED"
        finally:
            client.close()


async def test_rest_infer_through_tritonclient_http_binary_and_json() -> None:
    async with serve_http(make_app()) as served:
        client = triton_http.InferenceServerClient(f"127.0.0.1:{served.server.http_port}")
        try:
            a = triton_http.InferInput("a", [1], "INT64")
            a.set_data_from_numpy(np.array([2], dtype=np.int64))  # binary data extension
            b = triton_http.InferInput("b", [1], "INT64")
            b.set_data_from_numpy(np.array([40], dtype=np.int64), binary_data=False)
            added = await in_thread(lambda: client.infer("add", [a, b], request_id="r7"))
            assert added.as_numpy("result").tolist() == [42]
            assert added.get_response()["id"] == "r7"
            name = triton_http.InferInput("name", [1], "BYTES")
            name.set_data_from_numpy(np.array([b"ada"], dtype=np.object_), binary_data=False)
            greeted = await in_thread(lambda: client.infer("greet", [name]))
            assert greeted.as_numpy("result").tolist() == ["hello ada"]  # JSON answers text
            assert await in_thread(client.is_server_live)
            assert await in_thread(lambda: client.is_model_ready("scale"))
            metadata = await in_thread(lambda: client.get_model_metadata("add"))
            assert [i["name"] for i in metadata["inputs"]] == ["a", "b"]
            with pytest.raises(InferenceServerException) as error:
                await in_thread(lambda: client.infer("add", [triton_http_fp32("a")]))
            assert "input 'a' has datatype FP32; it takes INT64." in error.value.message()
        finally:
            client.close()


def triton_http_fp32(name: str) -> triton_http.InferInput:
    tensor = triton_http.InferInput(name, [1], "FP32")
    tensor.set_data_from_numpy(np.array([1.0], dtype=np.float32), binary_data=False)
    return tensor


async def test_rest_streams_with_mlservers_client_pattern() -> None:
    request = {
        "id": "req-1",
        "inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1], "data": ["a b c"]}],
    }
    async with serve_http(chat.app) as served:
        http = served.http
        url = "/v2/models/generate/generate_stream"
        async with aconnect_sse(http, "POST", url, json=request) as events:
            responses = [json.loads(event.data) async for event in events.aiter_sse()]
        flat = await http.post("/v2/models/generate/generate_stream", json={"prompt": "x y"})
        not_a_stream = await http.post("/v2/models/generate/infer", json=request)
        filtered = await http.post(
            "/v2/models/generate-filtered/infer_stream",
            json={
                "inputs": [
                    {"name": "prompt", "datatype": "BYTES", "shape": [1], "data": ["oh darn"]}
                ]
            },
        )
    assert [r["outputs"][0]["data"] for r in responses] == [["a"], ["b"], ["c"]]
    assert {r["id"] for r in responses} == {"req-1"}
    assert responses[0]["model_name"] == "generate"
    assert flat.text == (
        'data: {"model_name":"generate","model_version":"1","result":"x"}\n\n'
        'data: {"model_name":"generate","model_version":"1","result":"y"}\n\n'
    )
    assert not_a_stream.status_code == 501
    assert (
        "generate_stream" in not_a_stream.json()["error"]
        or "infer_stream" in (not_a_stream.json()["error"])
    )
    assert filtered.text.startswith('data: {"model_name":"generate-filtered"')
    assert "event: error\ndata: " in filtered.text
    error = json.loads(filtered.text.split("event: error\ndata: ")[1])
    assert error == {
        "error": "the content filter stopped the answer at word 2; rephrase the prompt.",
        "code": "FAILED_PRECONDITION",
    }


async def test_rest_metadata_health_and_errors() -> None:
    async with serve_http(make_app()) as served:
        http = served.http
        assert (await http.get("/v2/health/live")).json() == {"live": True}
        assert (await http.get("/v2/health/ready")).json() == {"ready": True}
        assert (await http.get("/v2")).json()["name"] == "blazerpc"
        metadata = (await http.get("/v2/models/scale/versions/1")).json()
        assert metadata["inputs"][0] == {"name": "values", "datatype": "FP64", "shape": [-1]}
        assert (await http.get("/v2/models/add/ready")).json() == {"name": "add", "ready": True}
        missing = await http.get("/v2/models/nope")
        assert missing.status_code == 404 and "no model named 'nope'" in missing.json()["error"]
        wrong_version = await http.post("/v2/models/add/versions/9/infer", json={})
        assert wrong_version.status_code == 404
        nested = await http.post(
            "/v2/models/scale/infer",
            json={
                "inputs": [
                    {"name": "values", "datatype": "FP64", "shape": [3], "data": [[1, 2], [3]]}
                ],
                "outputs": [{"name": "result"}],
            },
        )
        assert nested.json()["outputs"] == [
            {"name": "result", "datatype": "FP64", "shape": [3], "data": [2.0, 4.0, 6.0]}
        ]
        wrong_count = await http.post(
            "/v2/models/scale/infer",
            json={"inputs": [{"name": "values", "datatype": "FP64", "shape": [3], "data": [1]}]},
        )
        assert wrong_count.status_code == 400
        assert "holds 3 elements, but 1 were sent" in wrong_count.json()["error"]
        generated = await http.post("/v2/models/add/generate", json={"a": 1, "b": 2})
        assert generated.json() == {"model_name": "add", "model_version": "1", "result": 3}


async def test_generate_reads_a_flat_body_as_the_gateway_does_int_keys_included() -> None:
    app = BlazeApp()

    @app.model("labels")
    def labels(names: dict[int, str]) -> str:
        return ",".join(f"{key}={value}" for key, value in sorted(names.items()))

    async with serve_http(app) as served:
        body = {"names": {"2": "b", "1": "a"}}
        gateway = await served.http.post("/models/labels", json=body)
        generated = await served.http.post("/v2/models/labels/generate", json=body)
    assert gateway.json() == {"result": "1=a,2=b"}
    assert generated.status_code == 200 and generated.json()["result"] == "1=a,2=b"


async def test_rest_nulls_mean_what_was_left_out() -> None:
    """What MLServer's `InferenceRequest.dict()` sends when nothing is asked: nulls."""
    request = {
        "id": None,
        "parameters": None,
        "inputs": [
            {"name": "a", "datatype": "INT64", "shape": [1], "data": [2], "parameters": None},
            {"name": "b", "datatype": "INT64", "shape": [1], "data": [40], "parameters": None},
        ],
        "outputs": None,
    }
    async with serve_http(make_app()) as served:
        answer = await served.http.post("/v2/models/add/infer", json=request)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"] == [
        {"name": "result", "datatype": "INT64", "shape": [1], "data": [42]}
    ]


async def test_rest_errors_are_the_protocols_error_object() -> None:
    async with serve_http(make_app(), max_request_bytes=200) as served:
        http = served.http
        missing = await http.get("/v2/models/nope")
        bad = await http.post(
            "/v2/models/add/infer",
            json={"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
        )
        big = await http.post(
            "/v2/models/greet/infer",
            json={
                "inputs": [{"name": "name", "datatype": "BYTES", "shape": [1], "data": ["x" * 300]}]
            },
        )
        client = triton_http.InferenceServerClient(f"127.0.0.1:{served.server.http_port}")
        try:
            with pytest.raises(InferenceServerException) as error:
                await in_thread(lambda: client.infer("add", [triton_http_fp32("a")]))
        finally:
            client.close()
    assert missing.status_code == 404
    assert set(missing.json()) == {"error"} and "no model named 'nope'" in missing.json()["error"]
    assert bad.status_code == 400
    assert bad.json() == {"error": "input 'a' has datatype FP32; it takes INT64."}
    assert big.status_code == 413 and "retry-after" not in big.headers
    assert set(big.json()) == {"error"} and "max_request_bytes" in big.json()["error"]
    assert error.value.message() == "input 'a' has datatype FP32; it takes INT64."


def _mlserver_stream(
    port: int, model: str, *texts: str, input_name: str = "prompt"
) -> tuple[list[str], str, str]:
    """ModelStreamInfer as MLServer's dataplane.proto declares it: ModelInferRequest in (one
    per text), ModelInferResponse out (no wrapper). The words streamed, the status, its
    message."""
    requests = []
    for text_ in texts:
        request = service_pb2.ModelInferRequest(model_name=model, id="m1")
        tensor = request.inputs.add(name=input_name, datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(text_.encode())
        requests.append(request)
    words: list[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )
        try:
            for response in infer(iter(requests), timeout=WAIT_S):
                assert response.model_name == model and response.id == "m1"
                [output] = response.outputs
                assert output.name == "result"
                raw = response.raw_output_contents[0]
                words.append(raw[4 : 4 + struct.unpack("<I", raw[:4])[0]].decode())
        except grpc.RpcError as err:
            return words, err.code().name, err.details() or ""
    return words, "OK", ""


async def test_mlserver_stream_shape_sends_plain_responses_and_ends_on_an_error() -> None:
    async with BlazeServer(chat.app, port=0, open_inference_stream="mlserver") as server:
        streamed = await in_thread(lambda: _mlserver_stream(server.port, "generate", "a b c"))
        filtered = await in_thread(
            lambda: _mlserver_stream(server.port, "generate-filtered", "oh darn it")
        )
    assert streamed == (["a", "b", "c"], "OK", "")
    assert filtered == (
        ["oh"],
        "FAILED_PRECONDITION",
        "the content filter stopped the answer at word 2; rephrase the prompt.",
    )


async def test_mlserver_stream_shape_gives_a_bidi_model_every_request() -> None:
    async with BlazeServer(make_app(), port=0, open_inference_stream="mlserver") as server:
        stamped = await in_thread(
            lambda: _mlserver_stream(server.port, "stamps", "a", "b", "c", input_name="words")
        )
    assert stamped == (["0:a", "1:b", "2:c"], "OK", "")


def _versioned() -> BlazeApp:
    app = BlazeApp()

    @app.model("text-model", version="v1.2.3")
    def text_model(prompt: str) -> str:
        return prompt.upper()

    return app


async def test_a_models_version_is_served_where_the_protocol_names_versions() -> None:
    body = {"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
    async with serve_http(_versioned()) as served:
        http = served.http
        metadata = (await http.get("/v2/models/text-model")).json()
        versioned = await http.post("/v2/models/text-model/versions/v1.2.3/infer", json=body)
        ready = await http.get("/v2/models/text-model/versions/v1.2.3/ready")
        wrong = await http.post("/v2/models/text-model/versions/1/infer", json=body)
        listing = (await http.get("/models")).json()["models"]
        with pytest.raises(InferenceServerException) as grpc_wrong:
            client = triton.InferenceServerClient(f"127.0.0.1:{served.server.port}")
            try:
                grpc_metadata = await in_thread(lambda: client.get_model_metadata("text-model"))
                await in_thread(
                    lambda: client.infer("text-model", [text("prompt", "x")], model_version="7")
                )
            finally:
                client.close()
    assert metadata["versions"] == ["v1.2.3"]
    assert versioned.json()["model_version"] == "v1.2.3"
    assert versioned.json()["outputs"][0]["data"] == ["HI"]
    assert ready.json() == {"name": "text-model", "ready": True}
    assert wrong.status_code == 404
    assert wrong.json() == {
        "error": "model 'text-model' has no version '1'; it has version 'v1.2.3'."
    }
    assert [entry["version"] for entry in listing] == ["v1.2.3"]
    assert list(grpc_metadata.versions) == ["v1.2.3"]
    assert grpc_wrong.value.status() == "StatusCode.NOT_FOUND"
    assert "has version 'v1.2.3'" in grpc_wrong.value.message()
