"""Serving behaviour a caller notices: statuses, cancellation, deadlines, fairness, bad bytes."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.to_thread
import grpc
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality

from blazerpc import BlazeApp, BlazeClient, Context
from blazerpc.errors import ModelError, RpcError, Status
from blazerpc.grpc.service import RawBytesCodec
from blazerpc.server import BlazeServer
from blazerpc.testing import serve_app

from .support import Probe, raw_call

pytestmark = pytest.mark.anyio

GENERATE = "/blazerpc.InferenceService/PredictGenerate"
MALFORMED = {
    "truncated varint": b"\x10\x80",
    "wrong wire type": b"\x08\x05",
    "invalid UTF-8": b"\x0a\x02\xff\xfe",
    "length past the end": b"\x0a\x05ab",
    "random bytes": b"\xff\xff\xff\x07garbage",
}


def make_app(probe: Probe) -> BlazeApp:
    app = BlazeApp()

    @app.model("generate", streaming=True)
    async def generate(prompt: str, max_tokens: int = 1000) -> AsyncIterator[str]:
        try:
            for i in range(max_tokens):
                probe.produced += 1
                yield f"{prompt}{i}"
                await anyio.sleep(0.01)
        finally:
            probe.closed.set()

    @app.model("generate-sync")
    def generate_sync(prompt: str, max_tokens: int = 1000) -> Iterator[str]:
        try:
            for i in range(max_tokens):
                probe.produced += 1
                yield f"{prompt}{i}"
                time.sleep(0.01)
        finally:
            probe.closed.set()

    @app.model("held-sync")
    def held_sync(n: int) -> Iterator[bool]:
        """Holds its worker thread at the probe's gate before the first item: a slow model."""
        probe.start()
        yield probe.wait_released()  # True: the test opened the gate, so it kept running
        yield from [True] * (n - 1)

    @app.model("add")
    async def add(a: int, b: int = 0) -> int:
        return a + b

    @app.model("lookup")
    def lookup(key: str) -> str:
        if key == "missing":
            raise ModelError(Status.NOT_FOUND, f"key {key!r} is not in the table")
        if key == "boom":
            raise ValueError("the model broke")
        return key.upper()

    @app.model("wrong-result")
    def wrong_result(n: int) -> list[int]:
        return ["not", "ints"] if n else []  # type: ignore[list-item]  # the bug under test

    return app


@pytest.fixture
def app(probe: Probe) -> BlazeApp:
    return make_app(probe)


async def test_missing_required_field_is_invalid_argument_naming_it(app: BlazeApp) -> None:
    async with serve_app(app) as client:
        with pytest.raises(RpcError) as err:
            await client.predict("add", b=2)
        assert err.value.status is Status.INVALID_ARGUMENT
        assert "field 'a' is required" in err.value.message
        assert await client.predict("add", a=1) == 1


async def test_model_error_status_passes_through(app: BlazeApp) -> None:
    async with serve_app(app) as client:
        with pytest.raises(RpcError) as err:
            await client.predict("lookup", key="missing")
        assert err.value.status is Status.NOT_FOUND
        assert err.value.message == "key 'missing' is not in the table"
        assert await client.predict("lookup", key="ok") == "OK"


async def test_a_plain_exception_is_internal_naming_the_model(app: BlazeApp) -> None:
    async with serve_app(app) as client:
        with pytest.raises(RpcError) as err:
            await client.predict("lookup", key="boom")
        assert err.value.status is Status.INTERNAL
        rid = err.value.request_id
        assert rid is not None and len(rid) == 16  # the server made one; its log names it
        assert err.value.message == (
            f"model 'lookup' failed: ValueError: the model broke (request id {rid})"
        )
        assert await client.predict("lookup", key="ok") == "OK"


async def test_a_wrongly_typed_result_is_internal_naming_model_and_field(app: BlazeApp) -> None:
    async with serve_app(app) as client:
        with pytest.raises(RpcError) as err:
            await client.predict("wrong-result", n=1)
        assert err.value.status is Status.INTERNAL
        assert "model 'wrong-result' returned an invalid result" in err.value.message
        assert "field 'result'" in err.value.message
        assert await client.predict("wrong-result", n=0) == []


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_bodies_are_invalid_argument_and_the_channel_still_works(
    app: BlazeApp, body: bytes
) -> None:
    async with BlazeServer(app, port=0) as server:
        refused = await raw_call(server.port, GENERATE, body, streaming=True)
        assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "GenerateRequest" in refused.details or "field 'prompt'" in refused.details
        ok = await raw_call(server.port, GENERATE, b"\x0a\x01a\x10\x02", streaming=True)
        assert (ok.code, ok.messages) == (grpc.StatusCode.OK, [b"\x0a\x02a0", b"\x0a\x02a1"])


async def test_unknown_rpc_is_unimplemented(app: BlazeApp) -> None:
    async with BlazeServer(app, port=0) as server:
        reply = await raw_call(server.port, "/blazerpc.InferenceService/PredictNope", b"")
        assert reply.code is grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("model", ["generate", "generate-sync"])
async def test_breaking_out_of_a_stream_closes_the_generator(
    app: BlazeApp, probe: Probe, model: str
) -> None:
    async with serve_app(app) as client:
        async with contextlib.aclosing(client.stream(model, prompt="t")) as tokens:
            async for token in tokens:
                if token == "t2":
                    break
        produced_at_cancel = probe.produced
        await probe.wait_closed()
        assert probe.produced <= produced_at_cancel + 1


@pytest.mark.parametrize("model", ["generate", "generate-sync"])
async def test_a_passed_deadline_closes_the_generator(
    app: BlazeApp, probe: Probe, model: str
) -> None:
    async with serve_app(app) as client:
        with pytest.raises(RpcError) as err:
            async for _ in client.stream(model, prompt="t", timeout=0.2):
                pass
        assert err.value.status is Status.DEADLINE_EXCEEDED
        produced_at_deadline = probe.produced
        await probe.wait_closed()
        assert probe.produced <= produced_at_deadline + 1
        assert await client.predict("add", a=2, b=3) == 5


@pytest.mark.parametrize("model", ["generate", "generate-sync"])
async def test_a_dropped_connection_closes_the_generator(
    app: BlazeApp, probe: Probe, model: str
) -> None:
    path = (
        f"/blazerpc.InferenceService/Predict{'Generate' if model == 'generate' else 'GenerateSync'}"
    )
    async with BlazeServer(app, port=0) as server:
        channel = Channel("127.0.0.1", server.port, codec=RawBytesCodec())
        async with channel.request(path, Cardinality.UNARY_STREAM, bytes, bytes) as stream:
            await stream.send_message(b"\x0a\x01t", end=True)
            assert await stream.recv_message() is not None
            channel.close()  # the client vanishes without ending the call
            produced_at_drop = probe.produced
        await probe.wait_closed()
        assert probe.produced <= produced_at_drop + 1


async def test_a_slow_sync_generator_does_not_block_unary_calls(
    app: BlazeApp, probe: Probe
) -> None:
    async with serve_app(app) as client:
        items: list[bool] = []

        async def stream() -> None:
            items.extend([item async for item in client.stream("held-sync", n=3)])

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stream)
            await probe.wait_started()  # the generator now holds its thread at the gate
            sums = [await client.predict("add", a=i, b=1) for i in range(10)]
            probe.release()
    assert sums == list(range(1, 11))  # answered while the generator was held
    assert items == [True, True, True]  # a generator on the event loop would have blocked it,
    # the test could not have opened the gate, and the model's wait would have run out: False


async def test_typed_calls_check_and_type_the_result(app: BlazeApp) -> None:
    registry = app.registry
    add = registry["add"].function
    async with serve_app(app) as client:
        with pytest.raises(TypeError, match="model 'add' has no parameter 'c'"):
            await client.predict("add", a=1, c=2)
        with pytest.raises(TypeError, match=r"call it with client.stream\(\), not predict\(\)"):
            await client.predict("generate", prompt="x")
        with pytest.raises(RpcError) as err:
            await client.predict("nope")
        assert err.value.status is Status.NOT_FOUND
        assert await client.predict(add, a=40, b=2) == 42


async def test_context_gives_metadata_deadline_and_peer_and_is_not_on_the_wire() -> None:
    app = BlazeApp()
    seen: list[Context] = []

    @app.model("whoami")
    def whoami(greeting: str, ctx: Context) -> str:
        seen.append(ctx)
        return f"{greeting} {ctx.metadata.get('user', '?')}"

    assert [f.name for f in app.registry["whoami"].request.fields] == ["greeting"]
    async with serve_app(app, timeout=5) as client:
        assert await client.predict("whoami", greeting="hi") == "hi ?"
    (ctx,) = seen
    remaining = ctx.time_remaining
    assert remaining is not None and 0 < remaining <= 5
    assert ctx.peer is not None and ctx.peer.startswith("127.0.0.1:")
    assert not ctx.is_cancelled


async def test_context_reports_cancellation_to_a_sync_model() -> None:
    app = BlazeApp()
    stopped_early = threading.Event()

    @app.model("long")
    def long_job(steps: int, ctx: Context) -> int:
        for step in range(steps):
            if ctx.is_cancelled:
                stopped_early.set()
                return step
            time.sleep(0.02)
        return steps

    async with serve_app(app) as client:
        with pytest.raises(RpcError) as err:
            await client.predict("long", steps=500, timeout=0.2)
        assert err.value.status is Status.DEADLINE_EXCEEDED
        assert await anyio.to_thread.run_sync(stopped_early.wait, 5)


async def test_an_error_mid_stream_ends_it_with_its_status_after_the_items_sent() -> None:
    app = BlazeApp()

    @app.model("flaky", streaming=True)
    async def flaky(fail_after: int) -> AsyncIterator[int]:
        for i in range(fail_after):
            yield i
        raise ModelError(Status.RESOURCE_EXHAUSTED, "out of GPU memory")

    received: list[int] = []
    async with serve_app(app) as client:
        with pytest.raises(RpcError) as err:
            async for item in client.stream("flaky", fail_after=2):
                received.append(item)
        assert received == [0, 1]
        assert err.value.status is Status.RESOURCE_EXHAUSTED
        assert err.value.message == "out of GPU memory"
        again: list[int] = []
        with pytest.raises(RpcError):  # the next call on the same channel is served too
            async for item in client.stream("flaky", fail_after=1):
                again.append(item)
        assert again == [0]


async def test_sync_stream_models_read_the_client_stream_in_a_worker_thread() -> None:
    app = BlazeApp()

    @app.model("sum")
    def total(values: Iterator[int]) -> int:
        return sum(values)

    @app.model("doubles")
    def doubles(values: Iterator[int]) -> Iterator[int]:
        for value in values:
            yield value * 2

    async with serve_app(app) as client:
        assert await client.send_stream(total, [1, 2, 3]) == 6
        assert [d async for d in client.exchange("doubles", [1, 2, 3])] == [2, 4, 6]


async def test_per_call_timeouts_reach_client_streams() -> None:
    app = BlazeApp()

    @app.model("never-ends")
    async def never_ends(values: AsyncIterator[int]) -> int:
        async for _ in values:
            pass
        return 0

    async def forever() -> AsyncIterator[int]:
        while True:
            yield 1
            await anyio.sleep(0.01)

    async with serve_app(app, timeout=30) as client:
        with anyio.fail_after(10), pytest.raises(RpcError) as err:
            await client.send_stream(never_ends, forever(), timeout=0.2)
        assert err.value.status is Status.DEADLINE_EXCEEDED


@pytest.mark.parametrize("shape", ["client-streaming", "bidirectional"])
async def test_a_deadline_wakes_a_sync_model_waiting_for_the_clients_next_message(
    shape: str,
) -> None:
    app = BlazeApp()
    closed = threading.Event()

    @app.model("sum")
    def total(values: Iterator[int]) -> int:
        try:
            return sum(values)
        finally:
            closed.set()

    @app.model("echo")
    def echo(values: Iterator[int]) -> Iterator[int]:
        try:
            yield from values
        finally:
            closed.set()

    async def slow() -> AsyncIterator[int]:
        yield 1
        await anyio.sleep_forever()  # the client goes quiet; the deadline must end the call

    with anyio.fail_after(10):
        async with serve_app(app) as client:
            with pytest.raises(RpcError) as err:
                if shape == "client-streaming":
                    await client.send_stream("sum", slow(), timeout=0.3)
                else:
                    async for _ in client.exchange("echo", slow(), timeout=0.3):
                        pass
            assert err.value.status is Status.DEADLINE_EXCEEDED
            assert await anyio.to_thread.run_sync(closed.wait, 5), "the model is still waiting"


async def test_client_positional_fields_and_a_field_named_timeout() -> None:
    app = BlazeApp()

    @app.model("add")
    async def add(a: int, b: int = 0) -> int:
        return a + b

    @app.model("wait")
    def wait(timeout: float) -> float:
        return timeout * 2

    @app.model("collect")
    async def collect(ctx: Context, values: AsyncIterator[int]) -> int:
        return sum([v async for v in values])

    async with serve_app(app) as client:
        assert await client.predict(add, 40, 2) == 42
        with pytest.raises(TypeError, match="model 'add' takes 2 fields, got 3"):
            await client.predict(add, 1, 2, 3)  # type: ignore[call-overload]  # the runtime check under test
        with pytest.raises(TypeError, match="model 'add' got field 'a' twice"):
            await client.predict(add, 1, a=5)  # type: ignore[misc]  # the runtime check under test
        assert await client.predict("wait", timeout=1.5) == 3.0  # the model's field, not a deadline
        assert await client.send_stream("collect", [1, 2]) == 3  # Context before the stream


async def test_a_model_with_a_defaulted_context_can_be_called_typed() -> None:
    app = BlazeApp()

    @app.model("hello")
    def hello(name: str, ctx: Context = Context()) -> str:  # noqa: B008 - replaced by the server
        return f"hello {name} from {ctx.peer is not None}"

    async with serve_app(app) as client:
        assert await client.predict(hello, name="ada") == "hello ada from True"


async def test_client_metadata_reaches_the_models_context() -> None:
    app = BlazeApp()

    @app.model("whoami")
    async def whoami(ctx: Context) -> str:
        return f"{ctx.metadata.get('x-user-id')} {ctx.metadata.get('x-tenant')}"

    async with (
        BlazeServer(app, port=0) as server,
        BlazeClient(port=server.port, app=app, timeout=5, metadata={"x-tenant": "acme"}) as client,
    ):
        assert await client.predict("whoami") == "None acme"
        scoped = client.with_metadata({"x-user-id": "ada"})
        assert await scoped.predict("whoami") == "ada acme"
        assert await client.predict("whoami") == "None acme"  # the view did not change it
        for bad in ({"X-User": "a"}, {"grpc-timeout": "1S"}, {"x-blob-bin": "a"}, {"x": "é"}):
            with pytest.raises(ValueError, match="metadata"):
                client.with_metadata(bad)
