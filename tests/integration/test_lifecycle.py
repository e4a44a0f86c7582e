"""A server's life through stock clients: lifespan, health, reflection, drain and limits."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from blazerpc import (
    Batching,
    BlazeApp,
    BlazeClient,
    BlazeServer,
    LifespanError,
    RpcError,
    Status,
)
from blazerpc.runtime.admission import Phase

from .support import WAIT_S, Probe, wait_until

pytestmark = pytest.mark.anyio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _app(
    events: list[str],
    *,
    loading: anyio.Event | None = None,
    loaded: anyio.Event | None = None,
    probe: Probe | None = None,
) -> BlazeApp:
    app = BlazeApp()

    @app.lifespan
    async def weights() -> AsyncIterator[None]:
        events.append("loading")
        if loading is not None:
            loading.set()
        if loaded is not None:
            await loaded.wait()
        events.append("loaded")
        yield
        events.append("released")

    @app.model("slow")
    async def slow(seconds: float) -> str:
        events.append("slow called")
        await asyncio.sleep(seconds)
        return "done"

    @app.model("held")
    async def held() -> str:
        """Waits at the probe's gate: a call in flight for as long as the test wants."""
        assert probe is not None
        probe.start()
        await probe.until_released()
        return "done"

    @app.model("tokens", streaming=True)
    async def tokens(count: int) -> AsyncIterator[int]:
        try:
            for i in range(count):
                yield i
                await asyncio.sleep(0.02)
        finally:
            events.append("tokens closed")

    @app.model("echo")
    def echo(data: bytes) -> bytes:
        return data

    @app.model("stamp")
    def stamp(when: datetime.datetime) -> datetime.datetime:
        return when

    return app


async def _health(port: int, service: str = "") -> Any:
    """grpcio's blocking stub in a thread (grpc.aio's process-wide state outlives a test's loop)."""

    def check() -> Any:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    return await anyio.to_thread.run_sync(check)


async def test_health_is_not_serving_until_the_lifespan_is_ready() -> None:
    events: list[str] = []
    loading, loaded = anyio.Event(), anyio.Event()
    app = _app(events, loading=loading, loaded=loaded)
    server = BlazeServer(app, port=0)
    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as group:
            group.start_soon(server.start)
            await loading.wait()  # the port is open by now: hooks run after it is bound
            assert await _health(server.port) == NOT_SERVING
            assert await _health(server.port, "slow") == NOT_SERVING
            async with BlazeClient(port=server.port, app=app, timeout=5) as client:
                with pytest.raises(RpcError) as refused:
                    await client.predict("slow", seconds=0)
            assert refused.value.status is Status.UNAVAILABLE
            assert "loading" in refused.value.message
            loaded.set()
        for name in ("", "blazerpc.InferenceService", "slow", "held", "tokens"):
            assert await _health(server.port, name) == SERVING
        await server.close()
    assert events == ["loading", "loaded", "released"]  # no call ran before "loaded"


async def test_health_check_of_an_unknown_name_is_not_found() -> None:
    async with BlazeServer(_app([]), port=0) as server:
        with pytest.raises(grpc.RpcError) as err:
            await _health(server.port, "nope")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "slow" in (err.value.details() or "")


async def test_health_watch_sees_the_drain() -> None:
    server = BlazeServer(_app([]), port=0)
    await server.start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="tokens"), timeout=10)
        statuses = [(await anyio.to_thread.run_sync(next, watch)).status]
        drain = asyncio.ensure_future(server.drain(1))
        statuses.append((await anyio.to_thread.run_sync(next, watch)).status)
        watch.cancel()
        await drain
    assert statuses == [SERVING, NOT_SERVING]


async def test_a_failing_lifespan_stops_the_server_with_its_name() -> None:
    app = BlazeApp()

    @app.lifespan
    def broken() -> Iterator[None]:
        raise OSError("weights.bin not found")
        yield

    @app.model("noop")
    def noop() -> None: ...

    server = BlazeServer(app, port=0)
    with pytest.raises(LifespanError, match=r"broken failed while starting: OSError: weights.bin"):
        await server.start()


async def _reflect(port: int, *requests: Any) -> list[Any]:
    def ask() -> list[Any]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            return list(stub.ServerReflectionInfo(iter(requests), timeout=5))

    return await anyio.to_thread.run_sync(ask)


async def test_a_stock_reflection_client_lists_and_describes_the_service() -> None:
    async with BlazeServer(_app([]), port=0) as server:
        listed, described, dependency = await _reflect(
            server.port,
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="blazerpc.InferenceService"
            ),
            reflection_pb2.ServerReflectionRequest(
                file_by_filename="google/protobuf/timestamp.proto"
            ),
        )
    names = [service.name for service in listed.list_services_response.service]
    assert names == [
        "blazerpc.InferenceService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    (data,) = described.file_descriptor_response.file_descriptor_proto
    file = descriptor_pb2.FileDescriptorProto.FromString(data)
    assert [method.name for method in file.service[0].method] == [
        "PredictSlow",
        "PredictHeld",
        "PredictTokens",
        "PredictEcho",
        "PredictStamp",
    ]
    slow_request = next(m for m in file.message_type if m.name == "SlowRequest")
    double = descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE
    assert [(f.name, f.type) for f in slow_request.field] == [("seconds", double)]
    assert "google/protobuf/timestamp.proto" in file.dependency
    (data,) = dependency.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(data).message_type[0].name == "Timestamp"


async def test_reflection_can_be_turned_off() -> None:
    async with BlazeServer(_app([]), port=0, reflection=False) as server:
        with pytest.raises(grpc.RpcError) as err:
            await _reflect(server.port)  # no request: the status comes before any write
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_drain_sends_new_calls_elsewhere_and_lets_running_ones_finish(probe: Probe) -> None:
    events: list[str] = []
    app = _app(events, probe=probe)
    server = BlazeServer(app, port=0)
    await server.start()
    port = server.port
    results: list[str] = []
    with anyio.fail_after(WAIT_S):  # a grace period of 60 s: the calls finish long before
        async with BlazeClient(port=server.port, app=app, timeout=WAIT_S) as client:

            async def call_held() -> None:
                results.append(await client.predict("held"))

            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(call_held)
                await probe.wait_started(5)
                group.start_soon(server.drain, 60)
                await wait_until(lambda: server.phase is Phase.DRAINING, "the drain began")
                # the drain's GOAWAY reached the client (GracefulChannel notes such connections)
                told = client._endpoints.all[0].channel._going_away
                await wait_until(lambda: len(told) > 0, "the GOAWAY reached the client")
                with pytest.raises(RpcError) as refused:  # told GOAWAY: it tries a new connection
                    await client.predict("slow", seconds=0)
                assert refused.value.status is Status.UNAVAILABLE
                assert f"connection to the server at 127.0.0.1:{port} failed" in (
                    refused.value.message
                )
                assert refused.value.refused  # never ran: it was sent again, in vain
                assert events == ["loading", "loaded"]  # the five still run: nothing released
                probe.release()
    assert results == ["done"] * 5
    assert events == ["loading", "loaded", "released"]
    assert "slow called" not in events


async def test_a_drain_ends_open_streams_with_unavailable_after_the_grace_period() -> None:
    events: list[str] = []
    app = _app(events)
    server = BlazeServer(app, port=0)
    await server.start()
    with anyio.fail_after(WAIT_S):
        async with BlazeClient(port=server.port, app=app, timeout=WAIT_S) as client:
            tokens = client.stream("tokens", count=10_000)
            assert await anext(tokens) == 0
            drained = asyncio.ensure_future(server.drain(0.1))
            with pytest.raises(RpcError) as err:
                async for _ in tokens:
                    pass
            await drained
    assert err.value.status is Status.UNAVAILABLE
    assert "grace period" in err.value.message
    assert events == ["loading", "loaded", "tokens closed", "released"]


async def test_an_oversize_request_is_refused_unread_and_the_server_stays_healthy() -> None:
    app = _app([])
    async with (
        BlazeServer(app, port=0, max_request_bytes=1000) as server,
        BlazeClient(port=server.port, app=app, timeout=5) as client,
    ):
        with pytest.raises(RpcError) as err:
            await client.predict("echo", data=b"x" * 5000)
        assert err.value.status is Status.RESOURCE_EXHAUSTED
        assert "max_request_bytes" in err.value.message and "1000" in err.value.message
        assert await client.predict("echo", data=b"x" * 500) == b"x" * 500
        assert await _health(server.port) == SERVING


async def test_an_oversize_response_fails_its_call_only() -> None:
    app = _app([])
    async with (
        BlazeServer(app, port=0, max_response_bytes=100) as server,
        BlazeClient(port=server.port, app=app, timeout=5) as client,
    ):
        with pytest.raises(RpcError) as err:
            await client.predict("echo", data=b"x" * 500)
        assert err.value.status is Status.RESOURCE_EXHAUSTED
        assert "model 'echo'" in err.value.message and "max_response_bytes" in err.value.message
        assert await client.predict("echo", data=b"ok") == b"ok"


async def test_streams_past_max_streams_are_refused() -> None:
    app = _app([])
    async with (
        BlazeServer(app, port=0, max_streams=2) as server,
        BlazeClient(port=server.port, app=app, timeout=5) as client,
    ):
        open_streams = [client.stream("tokens", count=1000) for _ in range(2)]
        for stream in open_streams:
            assert await anext(stream) == 0
        with pytest.raises(RpcError) as err:
            await anext(client.stream("tokens", count=1))
        assert err.value.status is Status.RESOURCE_EXHAUSTED
        assert "max_streams" in err.value.message
        assert await client.predict("slow", seconds=0) == "done"  # unary calls are not streams
        for stream in open_streams:
            await stream.aclose()
        await wait_until(lambda: server.running_calls == 0, "the server let go of both streams")
        assert [item async for item in client.stream("tokens", count=2)] == [0, 1]


async def test_a_sync_lifespan_runs_in_a_thread_and_a_batch_finishes_during_the_drain(
    probe: Probe,
) -> None:
    events: list[str] = []
    app = BlazeApp()

    @app.lifespan
    def weights() -> Iterator[None]:
        events.append("loaded")
        yield
        events.append("released")

    @app.model("double", batch=Batching(max_size=3, max_wait_s=59))
    async def double(x: list[float]) -> list[float]:
        events.append(f"batch of {len(x)}")
        probe.start()
        await probe.until_released()
        return [v * 2 for v in x]

    server = BlazeServer(app, port=0)
    await server.start()
    with anyio.fail_after(WAIT_S):
        async with BlazeClient(port=server.port, app=app, timeout=WAIT_S) as client:
            results: list[float] = []

            async def call(x: float) -> None:
                results.append(await client.predict("double", x=x))

            async with anyio.create_task_group() as group:
                for x in (1.0, 2.0, 3.0):
                    group.start_soon(call, x)
                await probe.wait_started()  # the batch of three runs
                group.start_soon(server.drain, 60)
                await wait_until(lambda: server.phase is Phase.DRAINING, "the drain began")
                probe.release()
    assert sorted(results) == [2.0, 4.0, 6.0]
    assert events == ["loaded", "batch of 3", "released"]
