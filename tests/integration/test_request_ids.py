"""Request ids and error detail: a caller's failure can be found in the server's log, and an
INTERNAL error from `blaze serve` tells the caller nothing of the exception."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import grpc
import httpx
import pytest
import websockets.asyncio.client

from blazerpc import BlazeApp, BlazeServer, Context, RpcError, ServerConfig
from blazerpc.testing import serve_app
from blazerpc.wire.protobuf import SchemaCodec

from .support import WAIT_S, blaze_serve, serve_http

pytestmark = pytest.mark.anyio

BROKEN_APP = """\
from collections.abc import Iterator
from blazerpc import BlazeApp, Context

app = BlazeApp()

@app.model("load")
def load(path: str) -> str:
    with open(path) as weights:
        return weights.read()

@app.model("whoami")
def whoami(ctx: Context) -> str:
    return ctx.request_id
"""
_ID = re.compile(r"[0-9a-f]{16}")


def _app() -> BlazeApp:
    app = BlazeApp()

    @app.model("whoami")
    async def whoami(ctx: Context) -> str:
        return ctx.request_id

    @app.model("broken")
    async def broken(x: int) -> int:
        raise FileNotFoundError(2, "No such file or directory", "/srv/weights/w.bin")

    @app.model("echo", streaming=True)
    async def echo(words: AsyncIterator[str]) -> AsyncIterator[str]:
        async for word in words:
            yield word

    return app


APP = _app()
CLASSES = SchemaCodec(APP.schema).classes


async def test_grpc_calls_take_the_callers_id_or_a_new_one_and_echo_the_callers() -> None:
    async with BlazeServer(APP, port=0) as server:
        port = server.port

        def calls() -> dict[str, Any]:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                whoami = channel.unary_unary(
                    "/blazerpc.InferenceService/PredictWhoami",
                    request_serializer=CLASSES["WhoamiRequest"].SerializeToString,
                    response_deserializer=CLASSES["WhoamiResponse"].FromString,
                )
                request = CLASSES["WhoamiRequest"]()
                given, call = whoami.with_call(
                    request, timeout=WAIT_S, metadata=[("x-request-id", "trace-42")]
                )
                made, made_call = whoami.with_call(request, timeout=WAIT_S)
                unusable, _ = whoami.with_call(
                    request, timeout=WAIT_S, metadata=[("x-request-id", "has space")]
                )
                return {
                    "given": given.result,
                    "echoed": dict(call.trailing_metadata()).get("x-request-id"),
                    "made": made.result,
                    "made trailers": dict(made_call.trailing_metadata()).get("x-request-id"),
                    "unusable": unusable.result,
                }

        seen = await anyio.to_thread.run_sync(calls)
    assert seen["given"] == seen["echoed"] == "trace-42"
    assert _ID.fullmatch(seen["made"])  # the model and the access log have it ...
    assert seen["made trailers"] is None  # ... and an OK response spares its cost
    assert _ID.fullmatch(seen["unusable"])  # replaced: ids are echoed into headers and logs


async def test_a_failed_call_has_its_id_in_the_trailers_and_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve_app(APP) as client:
        with pytest.raises(RpcError) as failed:
            await client.with_metadata({"x-request-id": "req-7"}).predict("broken", x=1)
    assert failed.value.request_id == "req-7"
    assert failed.value.message == (
        "model 'broken' failed: FileNotFoundError: [Errno 2] No such file or directory: "
        "'/srv/weights/w.bin' (request id req-7)"  # serve_app: full detail, for tests
    )
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged[0].getMessage().startswith("model 'broken' failed [request id req-7]: ")
    assert logged[0].exc_info is not None


async def test_redacted_errors_name_the_model_and_the_id_only() -> None:
    config = ServerConfig(error_detail="redacted")
    async with serve_app(APP, config=config) as client:
        with pytest.raises(RpcError) as failed:
            await client.predict("broken", x=1)
    rid = failed.value.request_id
    assert rid is not None and _ID.fullmatch(rid)
    assert failed.value.message == (
        f"model 'broken' failed (request id {rid}); the server's log has the details."
    )


async def test_http_responses_and_websockets_carry_the_id() -> None:
    async with serve_http(APP) as served:
        http = served.http
        given = await http.post("/models/whoami", json={}, headers={"x-request-id": "h-1"})
        made = await http.post("/models/whoami", json={})
        missing = await http.post("/models/nope", json={})
        unknown_path = await http.get("/nowhere")
        url = f"ws://127.0.0.1:{served.server.http_port}/models/echo/ws"
        async with websockets.asyncio.client.connect(url) as socket:
            assert socket.response is not None
            ws_id = socket.response.headers["x-request-id"]
    assert given.headers["x-request-id"] == "h-1" and given.json() == {"result": "h-1"}
    assert made.json() == {"result": made.headers["x-request-id"]}
    assert _ID.fullmatch(made.headers["x-request-id"])
    assert _ID.fullmatch(missing.headers["x-request-id"]) and missing.status_code == 404
    assert _ID.fullmatch(unknown_path.headers["x-request-id"])
    assert _ID.fullmatch(ws_id)


def test_blaze_serve_redacts_an_internal_error_and_logs_its_traceback_under_its_id(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.py").write_text(BROKEN_APP, encoding="utf-8")
    with blaze_serve(
        "app.py:app", "--http-port", "0", cwd=tmp_path, stderr=subprocess.PIPE
    ) as served:
        with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            load = channel.unary_unary("/blazerpc.InferenceService/PredictLoad")
            with pytest.raises(grpc.RpcError) as failed:
                load(b"\x0a\x12/srv/weights/w.bin", timeout=WAIT_S)  # LoadRequest(path=...)
        http_port = served.first_line.rsplit(":", 1)[1].strip()
        answer = httpx.post(
            f"http://127.0.0.1:{http_port}/models/load", json={"path": "/srv/weights/w.bin"}
        )
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=WAIT_S) == 0
        assert served.process.stderr is not None
        log = served.process.stderr.read()
    error: Any = failed.value
    rid = dict(error.trailing_metadata())["x-request-id"]
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == (
        f"model 'load' failed (request id {rid}); the server's log has the details."
    )
    assert "w.bin" not in error.details() and "FileNotFoundError" not in error.details()
    http_id = answer.headers["x-request-id"]
    assert answer.status_code == 500 and "w.bin" not in answer.text
    assert answer.json()["message"].endswith(
        f"(request id {http_id}); the server's log has the details."
    )
    for call_id in (rid, http_id):  # each id finds its traceback, and its access line
        at = log.index(f"model 'load' failed [request id {call_id}]: FileNotFoundError")
        assert "Traceback (most recent call last)" in log[at:]
        assert "load unary INTERNAL" in log and f" id={call_id}" in log


def test_blaze_serve_writes_json_lines_for_log_collectors() -> None:
    with blaze_serve(
        "examples/chat.py:app", "--http-port", "0", "--log-format", "json",
        stderr=subprocess.PIPE,
    ) as served:  # fmt: skip
        http_port = served.first_line.rsplit(":", 1)[1].strip()
        answer = httpx.post(
            f"http://127.0.0.1:{http_port}/models/generate",
            json={"prompt": "a b", "max_tokens": 2},
            headers={"x-request-id": "json-1"},
        )
        assert answer.status_code == 200
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=WAIT_S) == 0
        assert served.process.stderr is not None
        lines = served.process.stderr.read().splitlines()
    documents = [json.loads(line) for line in lines]  # every line is a JSON object
    access = [d for d in documents if d["logger"] == "blazerpc.access"]
    assert access == [
        {
            "time": access[0]["time"],
            "level": "INFO",
            "logger": "blazerpc.access",
            "model": "generate",
            "shape": "server_streaming",
            "status": "OK",
            "duration_ms": access[0]["duration_ms"],
            "items": 2,
            "peer": access[0]["peer"],
            "transport": "http",
            "request_id": "json-1",
        }
    ]
    assert any("message" in d and d["logger"] != "blazerpc.access" for d in documents)
