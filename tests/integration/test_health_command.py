"""`blaze health`: one line and an exit status, for HEALTHCHECK and exec probes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import trustme

from blazerpc import BlazeApp, BlazeServer

from .support import BLAZE, FOUR_SHAPES, free_port, wait_until

pytestmark = pytest.mark.anyio


async def blaze_health(*args: str) -> tuple[int, str]:
    with anyio.fail_after(30):
        done = await anyio.run_process([BLAZE, "health", *args], check=False)
    return done.returncode, done.stdout.decode()


async def test_a_serving_server_and_model_exit_0() -> None:
    async with BlazeServer(FOUR_SHAPES, port=0) as server:
        port = str(server.port)
        assert await blaze_health("--port", port) == (0, f"127.0.0.1:{port}: SERVING\n")
        assert await blaze_health("--port", port, "--model", "count") == (
            0,
            f"127.0.0.1:{port} model count: SERVING\n",
        )
        status, line = await blaze_health("--port", port, "--model", "nope")
    assert status == 1
    assert line.startswith(f"127.0.0.1:{port} model nope: NOT_FOUND: no health status for 'nope'")


async def test_a_loading_server_is_not_serving_and_a_missing_one_unreachable() -> None:
    app = BlazeApp()
    loaded = asyncio.Event()

    @app.lifespan
    async def weights() -> AsyncIterator[None]:
        await loaded.wait()
        yield

    @app.model("echo")
    async def echo(text: str) -> str:
        return text

    server = BlazeServer(app, port=0)
    starting = asyncio.ensure_future(server.start())
    try:
        await wait_until(lambda: server._socket is not None, "the port bound, still loading")
        port = str(server.port)
        assert await blaze_health("--port", port) == (1, f"127.0.0.1:{port}: NOT_SERVING\n")
        loaded.set()
        await starting
        assert (await blaze_health("--port", port))[0] == 0
    finally:
        await server.close()
    free = str(free_port())
    status, line = await blaze_health("--port", free, "--timeout", "2")
    assert status == 1
    assert line.startswith(f"127.0.0.1:{free}: unreachable: ")


async def test_health_over_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    async with BlazeServer(
        FOUR_SHAPES, port=0, tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem")
    ) as server:
        port = str(server.port)
        trusted = await blaze_health("--port", port, "--tls-ca", str(tmp_path / "ca.pem"))
        plain = await blaze_health("--port", port, "--timeout", "2")
    assert trusted == (0, f"127.0.0.1:{port}: SERVING\n")
    assert plain[0] == 1
    assert plain[1].startswith(f"127.0.0.1:{port}: unreachable: ") and plain[1].count("\n") == 1


async def test_something_that_is_not_grpc_is_one_line() -> None:
    async def not_grpc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(not_grpc, "127.0.0.1", 0)
    port = str(listening.sockets[0].getsockname()[1])
    try:
        with anyio.fail_after(30):
            done = await anyio.run_process(
                [BLAZE, "health", "--port", port, "--timeout", "5"], check=False
            )
    finally:
        listening.close()
        await listening.wait_closed()
    assert done.returncode == 1
    assert done.stdout.decode().startswith(f"127.0.0.1:{port}: unreachable: ")
    assert done.stderr == b""
    assert (await blaze_health("--port", "70000"))[0] == 2  # click: out of range, one line
