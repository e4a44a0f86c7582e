"""A drain hands a server's callers over to the next one (a reload's new worker, a rolling
restart's new replica) without losing a call, whatever the client: stock grpcio, a plain
grpclib Channel (which ends every running call at any GOAWAY), or ours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality

from blazerpc import BlazeApp, BlazeServer
from blazerpc.wire.protobuf import SchemaCodec

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


@pytest.mark.xfail(strict=True, reason="the drain's GOAWAY ends a plain grpclib Channel's calls")
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
                got.append(message.result)
                if len(got) == 2:
                    drain = asyncio.ensure_future(server.drain(10))
        await drain
    finally:
        channel.close()
    assert got == list(range(20))
