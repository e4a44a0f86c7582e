"""API keys on every transport: stock grpcio, BlazeClient, httpx, curl, websockets, scrapers.

Keys come from a file; a call without a valid `authorization: Bearer <key>` is
UNAUTHENTICATED (401 over HTTP) and never learns which keys exist. Probes stay open.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import anyio
import grpc
import httpx
import pytest
import websockets.asyncio.client
import websockets.exceptions
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from blazerpc import BlazeApp, BlazeClient, BlazeServer, ConfigError, RpcError, ServerConfig
from blazerpc.openinference.protos import INFERENCE
from blazerpc.security.keys import ApiKeys
from blazerpc.testing import serve_app
from blazerpc.wire.protobuf import SchemaCodec

from .support import (
    BLAZE,
    EVERY_SHAPE,
    FOUR_SHAPES,
    WAIT_S,
    blaze_serve,
    stock_every_shape,
)

pytestmark = pytest.mark.anyio

KEY = "k-7f3a9c2e1b"
OTHER_KEY = "k-second-one"
SERVICE = "/blazerpc.InferenceService"
OI = "/inference.GRPCInferenceService"


APP = FOUR_SHAPES
CLASSES = SchemaCodec(APP.schema).classes


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = tmp_path / "keys"
    path.write_text(f"# the team's keys\n{KEY}\n\n  {OTHER_KEY}  \n", encoding="utf-8")
    return str(path)


def _bearer(key: str = KEY) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def _refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    raise AssertionError("the call was not refused")


async def test_every_grpc_shape_needs_a_key_and_a_valid_key_passes(
    key_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with BlazeServer(APP, port=0, api_key_file=key_file) as server:

        def calls() -> dict[str, Any]:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                return {
                    "with key": stock_every_shape(channel, _bearer()),
                    "second key": stock_every_shape(channel, _bearer(OTHER_KEY)),
                    "no key": _refusal(lambda: stock_every_shape(channel, [])),
                    "wrong key": _refusal(lambda: stock_every_shape(channel, _bearer("k-guess"))),
                    "basic": _refusal(
                        lambda: stock_every_shape(channel, [("authorization", f"Basic {KEY}")])
                    ),
                }

        seen = await anyio.to_thread.run_sync(calls)
    assert seen["with key"] == seen["second key"] == EVERY_SHAPE
    assert seen["no key"] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "this server requires an API key: send the metadata `authorization: Bearer <key>`.",
    )
    assert seen["wrong key"] == (grpc.StatusCode.UNAUTHENTICATED, "the API key sent is not valid.")
    assert seen["basic"][0] == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer <key>" in seen["basic"][1]
    assert KEY not in caplog.text and OTHER_KEY not in caplog.text  # never in the log


async def test_blaze_client_sends_its_key_even_to_learn_the_schema(key_file: str) -> None:
    async with serve_app(APP, config=ServerConfig(api_key_file=key_file), api_key=KEY) as client:
        assert await client.predict("add", a=1, b=2) == 3
    async with BlazeServer(APP, port=0, api_key_file=key_file) as server:
        async with BlazeClient(port=server.port, api_key=KEY, timeout=WAIT_S) as learned:
            assert await learned.predict("add", a=2, b=2) == 4
        with pytest.raises(RpcError) as refused:
            async with BlazeClient(port=server.port, timeout=WAIT_S):
                pass
        assert refused.value.status.name == "UNAUTHENTICATED"


async def test_probes_stay_open_and_the_rest_of_open_inference_needs_a_key(
    key_file: str,
) -> None:
    classes = INFERENCE.classes

    async with BlazeServer(APP, port=0, api_key_file=key_file) as server:

        def calls() -> dict[str, Any]:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S
                )

                def oi(rpc: str, **fields: Any) -> Any:
                    method = channel.unary_unary(
                        f"{OI}/{rpc}",
                        request_serializer=classes[f"{rpc}Request"].SerializeToString,
                        response_deserializer=classes[f"{rpc}Response"].FromString,
                    )
                    return lambda metadata=(): method(
                        classes[f"{rpc}Request"](**fields), timeout=WAIT_S, metadata=metadata
                    )

                return {
                    "health": health.status,
                    "server ready": oi("ServerReady")().ready,
                    "server live": oi("ServerLive")().live,
                    "model ready": oi("ModelReady", name="add")().ready,
                    "metadata": _refusal(oi("ModelMetadata", name="add"))[0],
                    "metadata with key": oi("ModelMetadata", name="add")(_bearer()).name,
                    "reflection": _refusal(lambda: _list_services(channel))[0],
                    "reflection with key": _list_services(channel, _bearer()),
                }

        seen = await anyio.to_thread.run_sync(calls)
    assert seen["health"] == health_pb2.HealthCheckResponse.SERVING
    assert seen["server ready"] and seen["server live"] and seen["model ready"]
    assert seen["metadata"] == grpc.StatusCode.UNAUTHENTICATED
    assert seen["metadata with key"] == "add"
    assert seen["reflection"] == grpc.StatusCode.UNAUTHENTICATED
    assert "blazerpc.InferenceService" in seen["reflection with key"]


def _list_services(channel: grpc.Channel, metadata: list[tuple[str, str]] = []) -> list[str]:  # noqa: B006
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = stub.ServerReflectionInfo(iter([request]), timeout=WAIT_S, metadata=metadata)
    return [s.name for r in responses for s in r.list_services_response.service]


async def test_public_reflection_lists_services_without_a_key(key_file: str) -> None:
    async with BlazeServer(APP, port=0, api_key_file=key_file, public_reflection=True) as server:

        def calls() -> tuple[list[str], grpc.StatusCode]:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                return _list_services(channel), _refusal(lambda: stock_every_shape(channel, []))[0]

        services, model_call = await anyio.to_thread.run_sync(calls)
    assert "blazerpc.InferenceService" in services
    assert model_call == grpc.StatusCode.UNAUTHENTICATED


async def test_every_http_route_needs_a_key_in_its_family_shape(key_file: str) -> None:
    async with BlazeServer(APP, port=0, http_port=0, api_key_file=key_file) as server:
        base = f"http://127.0.0.1:{server.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=WAIT_S) as http:
            keyed = {"authorization": f"Bearer {KEY}"}
            add = await http.post("/models/add", json={"a": 1, "b": 2})
            assert add.status_code == 401
            assert add.headers["www-authenticate"] == "Bearer"
            assert add.json() == {
                "code": "UNAUTHENTICATED",
                "message": "this server requires an API key: send the header "
                "`authorization: Bearer <key>`.",
            }
            wrong = await http.post("/models/add", json={"a": 1, "b": 2}, headers=_h("k-x"))
            assert wrong.json()["message"] == "the API key sent is not valid."
            ok = await http.post("/models/add", json={"a": 1, "b": 2}, headers=keyed)
            assert ok.json() == {"result": 3}
            for path in ("/models", "/models/add", "/openapi.json", "/v2", "/v2/models/add"):
                assert (await http.get(path)).status_code == 401, path
                assert (await http.get(path, headers=keyed)).status_code == 200, path
            infer = {"inputs": [_tensor("a", 1), _tensor("b", 2)]}
            refused = await http.post("/v2/models/add/infer", json=infer)
            assert refused.status_code == 401
            assert refused.json() == {"error": "this server requires an API key: send the "
                                      "header `authorization: Bearer <key>`."}  # fmt: skip
            answered = await http.post("/v2/models/add/infer", json=infer, headers=keyed)
            assert answered.json()["outputs"][0]["data"] == [3]
            for probe in (
                "/health/live",
                "/health/ready",
                "/v2/health/live",
                "/v2/health/ready",
                "/v2/models/add/ready",
                "/v2/models/add/versions/1/ready",
            ):
                assert (await http.get(probe)).status_code == 200, probe


def _h(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _tensor(name: str, value: int) -> dict[str, Any]:
    return {"name": name, "shape": [1], "datatype": "INT64", "data": [value]}


async def test_a_cors_preflight_is_never_refused_and_a_401_is_readable(key_file: str) -> None:
    origin = "https://app.example"
    async with BlazeServer(
        APP, port=0, http_port=0, api_key_file=key_file, cors_origins=origin
    ) as server:
        base = f"http://127.0.0.1:{server.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=WAIT_S) as http:
            preflight = await http.options(
                "/models/add",
                headers={
                    "origin": origin,
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "authorization, content-type",
                },
            )
            refused = await http.post("/models/add", json={"a": 1}, headers={"origin": origin})
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == origin


async def test_a_websocket_takes_the_key_as_a_header_or_as_subprotocols(key_file: str) -> None:
    async with BlazeServer(APP, port=0, http_port=0, api_key_file=key_file) as server:
        url = f"ws://127.0.0.1:{server.http_port}/models/echo/ws"
        async with websockets.asyncio.client.connect(url, additional_headers=_h(KEY)) as socket:
            await socket.send('{"words": "hi"}')
            assert await socket.recv() == '{"result":"HI"}'
        async with websockets.asyncio.client.connect(
            url,
            subprotocols=["bearer", KEY],  # type: ignore[list-item]
        ) as socket:
            assert socket.subprotocol == "bearer"
            await socket.send('{"words": "yo"}')
            assert await socket.recv() == '{"result":"YO"}'
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.asyncio.client.connect(url):
                pass
        assert refused.value.response.status_code == 401
        assert b"requires an API key" in refused.value.response.body
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.asyncio.client.connect(url, subprotocols=["bearer", "k-x"]):  # type: ignore[list-item]
                pass


async def test_metrics_need_a_key_unless_public(key_file: str) -> None:
    async with BlazeServer(APP, port=0, metrics_port=0, api_key_file=key_file) as server:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            refused = await http.get(url)
            scraped = await http.get(url, headers=_h(KEY))
    assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHENTICATED"
    assert scraped.status_code == 200 and "blazerpc_requests" in scraped.text
    async with BlazeServer(
        APP, port=0, metrics_port=0, api_key_file=key_file, public_metrics=True
    ) as server:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            public = await http.get(f"http://127.0.0.1:{server.metrics_port}/metrics")
    assert public.status_code == 200


def test_a_key_file_with_no_key_or_no_file_is_a_config_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no key; write one key a line"):
        BlazeServer(APP, api_key_file=str(empty))
    with pytest.raises(ConfigError, match=r"--api-key-file \(BLAZE_API_KEY_FILE\): cannot read"):
        BlazeServer(APP, api_key_file=str(tmp_path / "missing"))


def test_blaze_serve_with_a_missing_key_file_says_so_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [BLAZE, "serve", "examples/chat.py:app", "--api-key-file", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--api-key-file (BLAZE_API_KEY_FILE): cannot read" in result.stderr


def test_curl_over_tls_with_a_key(key_file: str, tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    tls = ("--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"))
    with blaze_serve(
        "examples/chat.py:app", "--http-port", "0", "--api-key-file", key_file, *tls
    ) as served:
        http_port = served.first_line.rsplit(":", 1)[1].strip()
        url = f"https://127.0.0.1:{http_port}/models/generate"

        def curl(*headers: str) -> str:
            return subprocess.run(
                ["curl", "-sS", "--cacert", str(tmp_path / "ca.pem"), *headers,
                 "-H", "content-type: application/json",
                 "-d", '{"prompt": "a b", "max_tokens": 2}', url],
                capture_output=True, text=True, check=False, timeout=WAIT_S,
            ).stdout  # fmt: skip

        assert "UNAUTHENTICATED" in curl()
        assert "data:" in curl("-H", f"authorization: Bearer {KEY}")


async def test_two_authorization_values_are_refused_so_a_hook_reads_the_key_checked(
    key_file: str,
) -> None:
    app = BlazeApp()

    @app.model("add")
    async def add(a: int, b: int) -> int:
        return a + b

    two = [("authorization", f"Bearer {KEY}"), ("authorization", "Bearer admin-guess")]
    async with BlazeServer(app, port=0, http_port=0, api_key_file=key_file) as server:

        def call() -> tuple[grpc.StatusCode, str]:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                add_call = channel.unary_unary("/blazerpc.InferenceService/PredictAdd")
                return _refusal(lambda: add_call(b"\x08\x01", timeout=WAIT_S, metadata=two))

        refusal = await anyio.to_thread.run_sync(call)
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            answer = await http.post(
                f"http://127.0.0.1:{server.http_port}/models/add",
                content=b'{"a": 1, "b": 2}',
                headers=two,
            )
    assert refusal == (
        grpc.StatusCode.UNAUTHENTICATED,
        "the call carries 2 authorization values; send one.",
    )
    assert answer.status_code == 401
    assert answer.json()["message"] == "the call carries 2 authorization values; send one."


async def test_a_refusal_has_a_request_id_and_its_log_line_cannot_be_forged(
    key_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    forged = "/models%0AWARNING blazerpc.access: add unary OK 1.0ms via=http id=forged"
    async with BlazeServer(APP, port=0, http_port=0, api_key_file=key_file) as server:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            answer = await http.get(f"http://127.0.0.1:{server.http_port}{forged}")

        def call() -> list[tuple[str, str]]:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                add = channel.unary_unary("/blazerpc.InferenceService/PredictAdd")
                try:
                    add(b"", timeout=WAIT_S, metadata=[("x-request-id", "no-key-1")])
                except grpc.RpcError as err:
                    return list(err.trailing_metadata())
            raise AssertionError("a call without a key was answered")

        trailers = await anyio.to_thread.run_sync(call)
    assert answer.status_code == 401
    rid = answer.headers["x-request-id"]
    lines = caplog.text.splitlines()
    assert not any("WARNING blazerpc.access" in line.split(":", 1)[0] for line in lines)
    assert any(f"[request id {rid}]" in line and "UNAUTHENTICATED" in line for line in lines)
    assert ("x-request-id", "no-key-1") in trailers
    assert any("[request id no-key-1]" in line for line in lines)


async def test_preflights_and_websocket_refusals_say_the_right_thing(key_file: str) -> None:
    async with BlazeServer(APP, port=0, http_port=0, api_key_file=key_file) as server:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            preflight = await http.options(
                f"http://127.0.0.1:{server.http_port}/models/add",
                headers={"origin": "https://a.example", "access-control-request-method": "POST"},
            )
        url = f"ws://127.0.0.1:{server.http_port}/models/echo/ws"
        with pytest.raises(websockets.exceptions.InvalidStatus) as wrong:
            async with websockets.asyncio.client.connect(url, subprotocols=["bearer", "k-x"]):  # type: ignore[list-item]
                pass
    assert preflight.status_code != 401  # no CORS configured: not allowed, but not "no key"
    assert b"the API key sent is not valid." in wrong.value.response.body


async def test_probes_open_to_anyone_do_not_list_the_models(key_file: str) -> None:
    async with BlazeServer(APP, port=0, http_port=0, api_key_file=key_file) as server:
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            ready = await http.get(f"http://127.0.0.1:{server.http_port}/v2/models/nope/ready")

        def calls() -> tuple[str, str]:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                request = health_pb2.HealthCheckRequest(service="nope")
                model_ready = channel.unary_unary(
                    f"{OI}/ModelReady",
                    request_serializer=INFERENCE.classes["ModelReadyRequest"].SerializeToString,
                )
                oi_request = INFERENCE.classes["ModelReadyRequest"](name="nope")
                return (
                    _refusal(lambda: health.Check(request, timeout=WAIT_S))[1],
                    _refusal(lambda: model_ready(oi_request, timeout=WAIT_S))[1],
                )

        health_message, ready_message = await anyio.to_thread.run_sync(calls)
    assert ready.status_code == 404 and ready.json()["error"] == "there is no model named 'nope'."
    assert ready_message == "there is no model named 'nope'."
    assert "add" not in health_message and "echo" not in health_message


def test_a_key_file_with_a_byte_order_mark_keeps_its_first_key(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(b"\xef\xbb\xbfk-first\nk-second\n")
    keys = ApiKeys.of(ServerConfig(api_key_file=str(path)))
    assert keys is not None and keys.accepts("k-first") and keys.accepts("k-second")


def test_blaze_client_refuses_a_key_it_cannot_send_without_showing_it() -> None:
    with pytest.raises(ValueError) as refused:
        BlazeClient(port=1, app=APP, api_key=f"{KEY}\n")
    assert KEY not in str(refused.value) and ".strip()" in str(refused.value)
    with pytest.raises(ValueError) as shown:
        BlazeClient(port=1, app=APP, metadata={"authorization": f"Bearer {KEY}\n"})
    assert KEY not in str(shown.value)
