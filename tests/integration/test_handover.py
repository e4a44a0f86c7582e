"""A drain hands a server's callers over to the next one (a reload's new worker, a rolling
restart's new replica) without losing a call, whatever the client: stock grpcio, a plain
grpclib Channel (which ends every running call at any GOAWAY), or ours."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import grpc
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality

from blazerpc import BlazeApp, BlazeServer
from blazerpc.wire.protobuf import SchemaCodec

from .support import wait_until

pytestmark = pytest.mark.anyio

app = BlazeApp()


@app.model("quick")
async def quick(x: int) -> int:
    await asyncio.sleep(0.002)
    return x


@app.model("ticks", streaming=True)
async def ticks(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0.05)
        yield i


CLASSES = SchemaCodec(app.schema).classes
PATHS = {model.name: app.schema.rpc_path(model) for model in app.schema.models}


async def test_a_drain_lets_a_plain_grpclib_channels_running_calls_finish() -> None:
    server = BlazeServer(app, host="127.0.0.1", port=0)
    await server.start()
    channel = Channel("127.0.0.1", server.port)
    got: list[int] = []
    try:
        async with channel.request(
            PATHS["ticks"],
            Cardinality.UNARY_STREAM,
            CLASSES["TicksRequest"],
            CLASSES["TicksResponse"],
            timeout=10,
        ) as stream:
            await stream.send_message(CLASSES["TicksRequest"](n=20), end=True)
            async for message in stream:
                got.append(cast(Any, message).result)
                if len(got) == 2:
                    drain = asyncio.ensure_future(server.drain(10))
        await drain
    finally:
        channel.close()
    assert got == list(range(20))


async def test_stock_grpcio_callers_lose_no_call_when_a_server_hands_over() -> None:
    """Server A serves; B starts on the same port (SO_REUSEPORT, as --reload's new worker);
    A drains while 16 threads keep calling through one grpcio channel. Four times."""
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(4):
        await _hand_over_under_load(outcomes)
    assert [outcome for outcome in outcomes if outcome != "OK"] == []
    assert outcomes["OK"] > 400


async def _hand_over_under_load(outcomes: collections.Counter[str]) -> None:
    first = BlazeServer(app, host="127.0.0.1", port=0, shares_port=True)
    await first.start()
    second = BlazeServer(app, host="127.0.0.1", port=first.port, shares_port=True)
    stopping = threading.Event()
    lock = threading.Lock()
    with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        call = channel.unary_unary(
            PATHS["quick"],
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=CLASSES["QuickResponse"].FromString,
        )

        def keep_calling() -> None:
            while not stopping.is_set():
                try:
                    call(CLASSES["QuickRequest"](x=1), timeout=10)
                    outcome = "OK"
                except grpc.RpcError as err:
                    outcome = f"{err.code().name}: {err.details()}"
                with lock:
                    outcomes[outcome] += 1

        callers = [threading.Thread(target=keep_calling) for _ in range(16)]
        for caller in callers:
            caller.start()
        try:
            before = outcomes["OK"]
            await wait_until(lambda: outcomes["OK"] > before + 50, "calls flow")
            await second.start()
            await first.drain(10)
            drained = outcomes["OK"]
            await wait_until(lambda: outcomes["OK"] > drained + 50, "calls flow to the second")
        finally:
            stopping.set()
            for caller in callers:
                await anyio.to_thread.run_sync(caller.join)
    await second.close()
