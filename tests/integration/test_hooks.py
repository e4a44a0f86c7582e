"""The auth hook and middleware: around every call, on every transport, in a set order.

Stock grpcio, BlazeClient, httpx, websockets and the Open Inference routes as the callers; an
in-memory OpenTelemetry exporter as the judge of tracing.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import grpc
import pytest
import websockets.asyncio.client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from blazerpc import BlazeApp, Call, DefinitionError, ModelError, RpcError, Status
from blazerpc.openinference.protos import INFERENCE
from blazerpc.tracing import opentelemetry_middleware

from .support import WAIT_S, serve_http, wait_until

pytestmark = pytest.mark.anyio

TEAM = "x-team"


def _app(seen: list[str], ran: list[str]) -> BlazeApp:
    """Models, an auth hook that admits team "ml" only, and two middleware that tell the
    order of events in `seen`; `ran` lists the model calls that reached a model."""
    app = BlazeApp()

    @app.middleware
    def outer(call: Call) -> Iterator[None]:
        seen.append(f"outer> {call.model} via={call.transport}")
        yield
        seen.append(f"outer< {call.model} {call.status.name}")

    @app.middleware
    async def inner(call: Call) -> AsyncIterator[None]:
        seen.append(f"inner> {call.model}")
        yield
        seen.append(f"inner< {call.model} {call.status.name} {call.message}")

    @app.auth
    async def team_ml_only(call: Call) -> None:
        seen.append(f"auth {call.model} team={call.metadata.get(TEAM)} peer={bool(call.peer)}")
        if call.metadata.get(TEAM) != "ml":
            raise ModelError(Status.PERMISSION_DENIED, "only the ml team may call models")

    @app.model("add")
    async def add(a: int, b: int) -> int:
        ran.append("add")
        return a + b

    @app.model("count", streaming=True)
    async def count(n: int) -> AsyncIterator[int]:
        ran.append("count")
        for i in range(n):
            yield i

    @app.model("echo", streaming=True)
    async def echo(words: AsyncIterator[str]) -> AsyncIterator[str]:
        ran.append("echo")
        async for word in words:
            yield word

    return app


async def test_every_transport_runs_middleware_then_auth_then_the_model() -> None:
    seen: list[str] = []
    ran: list[str] = []
    app = _app(seen, ran)
    async with serve_http(app) as served:
        ml = served.client.with_metadata({TEAM: "ml"})
        assert await ml.predict("add", a=1, b=2) == 3
        assert [n async for n in ml.stream("count", n=2)] == [0, 1]
        with pytest.raises(RpcError) as refused:
            await served.client.predict("add", a=1, b=2)
        answered = await served.http.post(
            "/models/add", json={"a": 2, "b": 2}, headers={TEAM: "ml"}
        )
        forbidden = await served.http.post("/models/add", json={"a": 2, "b": 2})
        infer = {"inputs": [_tensor("a", 3), _tensor("b", 4)]}
        oi_rest = await served.http.post("/v2/models/add/infer", json=infer, headers={TEAM: "ml"})
        oi_forbidden = await served.http.post("/v2/models/add/infer", json=infer)
        url = f"ws://127.0.0.1:{served.server.http_port}/models/echo/ws"
        async with websockets.asyncio.client.connect(url, additional_headers={TEAM: "ml"}) as ws:
            await ws.send('{"words": "hi"}')
            assert json.loads(await ws.recv()) == {"result": "hi"}
            await ws.send("")
            await ws.wait_closed()
        async with websockets.asyncio.client.connect(url) as ws:
            closing = json.loads(await ws.recv())
            await ws.wait_closed()
        oi_grpc = await anyio.to_thread.run_sync(_oi_grpc_add, served.server.port)
    assert refused.value.status is Status.PERMISSION_DENIED
    assert refused.value.message == "only the ml team may call models"
    assert answered.json() == {"result": 4}
    assert forbidden.status_code == 403
    assert forbidden.json() == {
        "code": "PERMISSION_DENIED",
        "message": "only the ml team may call models",
    }
    assert oi_rest.json()["outputs"][0]["data"] == [7]
    assert oi_forbidden.status_code == 403
    assert closing["error"]["code"] == "PERMISSION_DENIED" and ws.close_code == 4007
    assert oi_grpc == (7, grpc.StatusCode.PERMISSION_DENIED)
    assert ran == ["add", "count", "add", "add", "echo", "add"]  # refused calls never ran
    assert seen[:5] == [
        "outer> add via=grpc",
        "inner> add",
        "auth add team=ml peer=True",
        "inner< add OK ",
        "outer< add OK",
    ]
    refusal = seen[10:15]
    assert refusal == [
        "outer> add via=grpc",
        "inner> add",
        "auth add team=None peer=True",
        "inner< add PERMISSION_DENIED only the ml team may call models",
        "outer< add PERMISSION_DENIED",
    ]
    transports = [line.split("via=")[1] for line in seen if line.startswith("outer>")]
    assert transports == ["grpc"] * 3 + ["http"] * 4 + ["ws"] * 2 + ["oip"] * 2


def _tensor(name: str, value: int) -> dict[str, Any]:
    return {"name": name, "shape": [1], "datatype": "INT64", "data": [value]}


def _oi_grpc_add(port: int) -> tuple[int, grpc.StatusCode]:
    classes = INFERENCE.classes
    request: Any = classes["ModelInferRequest"](model_name="add")
    for name, value in (("a", 3), ("b", 4)):
        tensor = request.inputs.add(name=name, datatype="INT64", shape=[1])
        tensor.contents.int64_contents.append(value)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=classes["ModelInferRequest"].SerializeToString,
            response_deserializer=classes["ModelInferResponse"].FromString,
        )
        answer = infer(request, timeout=WAIT_S, metadata=[(TEAM, "ml")])
        try:
            infer(request, timeout=WAIT_S)
        except grpc.RpcError as err:
            raw = answer.raw_output_contents[0]  # one INT64, little-endian
            return int.from_bytes(raw, "little", signed=True), err.code()
    raise AssertionError("the call without the team was not refused")


async def test_a_stream_passes_its_middleware_once_at_its_end() -> None:
    ends: list[tuple[str, str, float]] = []
    app = BlazeApp()

    @app.middleware
    def record(call: Call) -> Iterator[None]:
        yield
        ends.append((call.model, call.status.name, call.duration_s))

    @app.model("count", streaming=True)
    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async with serve_http(app) as served:
        assert len([n async for n in served.client.stream("count", n=50)]) == 50
        assert ends == [("count", "OK", ends[0][2])] and ends[0][2] > 0


async def test_middleware_may_refuse_before_and_cannot_break_a_call_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = BlazeApp()

    @app.middleware
    def rate_limit(call: Call) -> Iterator[None]:
        if call.metadata.get("x-flood") == "yes":
            raise ModelError(Status.RESOURCE_EXHAUSTED, "slow down")
        yield

    @app.middleware
    def broken_after(call: Call) -> Iterator[None]:
        yield
        raise RuntimeError("the log sink is down")

    @app.model("add")
    async def add(a: int, b: int) -> int:
        return a + b

    async with serve_http(app) as served:
        with pytest.raises(RpcError) as limited:
            await served.client.with_metadata({"x-flood": "yes"}).predict("add", a=1, b=1)
        assert await served.client.predict("add", a=1, b=1) == 2
    assert limited.value.status is Status.RESOURCE_EXHAUSTED
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failures and "middleware" in failures[0].getMessage()
    assert "the log sink is down" in caplog.text


async def test_opentelemetry_continues_the_callers_trace_into_the_model() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = BlazeApp()
    app.middleware(opentelemetry_middleware(provider))

    @app.model("trace-id")
    def trace_id(x: int) -> str:  # sync: runs in a worker thread, and still sees the span
        if x < 0:
            raise ValueError("negative")
        return f"{trace.get_current_span().get_span_context().trace_id:032x}"

    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{caller_trace}-00f067aa0ba902b7-01"
    async with serve_http(app) as served:
        grpc_seen = await served.client.with_metadata({"traceparent": traceparent}).predict(
            "trace-id", x=1
        )
        http_seen = await served.http.post(
            "/models/trace-id", json={"x": 1}, headers={"traceparent": traceparent}
        )
        fresh = await served.client.predict("trace-id", x=1)
        with pytest.raises(RpcError):
            await served.client.predict("trace-id", x=-1)
    assert grpc_seen == caller_trace and http_seen.json() == {"result": caller_trace}
    assert fresh != caller_trace
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["trace-id"] * 4
    assert spans[0].kind is trace.SpanKind.SERVER
    assert spans[0].parent is not None and f"{spans[0].parent.span_id:016x}" == "00f067aa0ba902b7"
    assert spans[0].attributes is not None and spans[0].attributes["rpc.grpc.status_code"] == 0
    assert spans[1].attributes is not None and spans[1].attributes["blazerpc.transport"] == "http"
    failed = spans[3]
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert failed.events[0].name == "exception"


def test_hooks_that_cannot_work_fail_at_definition_naming_the_fix() -> None:
    app = BlazeApp()
    with pytest.raises(DefinitionError, match="middleware .*must be a generator function"):

        @app.middleware  # type: ignore[type-var]  # mypy sees the mistake too
        def not_a_generator(call: Call) -> None: ...

    with pytest.raises(DefinitionError, match="auth hook .*not a generator"):

        @app.auth  # type: ignore[type-var]
        def generator(call: Call) -> Iterator[None]:
            yield

    with pytest.raises(DefinitionError, match="give it exactly one required parameter"):

        @app.auth  # type: ignore[type-var]
        def two(call: Call, other: int) -> None: ...


async def test_outer_middleware_finishes_when_a_cancellation_cuts_an_inner_one_short() -> None:
    events: list[str] = []
    inner_after = anyio.Event()
    app = BlazeApp()

    @app.middleware
    def outer(call: Call) -> Iterator[None]:
        yield
        events.append(f"outer< {call.status.name}")

    @app.middleware
    async def inner(call: Call) -> AsyncIterator[None]:
        yield
        inner_after.set()
        try:
            await anyio.sleep(WAIT_S)  # the caller leaves while this after-part still awaits
        except BaseException:
            events.append("inner cut short")
            raise

    @app.model("refuse")
    async def refuse(x: int) -> int:
        raise ModelError(Status.NOT_FOUND, "nothing here")

    async with serve_http(app) as served:
        async with anyio.create_task_group() as group:
            group.start_soon(_call_ignoring_its_end, served.client)
            with anyio.fail_after(WAIT_S):
                await inner_after.wait()
            group.cancel_scope.cancel()  # the client resets the stream: the handler is cancelled
        await wait_until(lambda: len(events) == 2, "both middleware finished")
    assert events == ["inner cut short", "outer< NOT_FOUND"]


async def _call_ignoring_its_end(client: Any) -> None:
    with contextlib.suppress(RpcError):
        await client.predict("refuse", x=1)
