"""Stock grpcio stubs, compiled from `blaze proto` output, call every shape of a real server."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from blazerpc import BlazeApp
from blazerpc.server import BlazeServer
from blazerpc.wire.proto_text import render_proto
from examples import chat, detect, tracker, transcribe

from .support import STOCK_CLIENT, WAIT_S, blaze_serve, compile_stubs, run_client

pytestmark = pytest.mark.anyio


def stubs_of(app: BlazeApp, where: Path) -> Path:
    """What `blaze proto` prints for `app`, compiled into grpcio stubs in `where`."""
    return compile_stubs(render_proto(app.schema), app.schema.file_name, where)


async def stock_call(app: BlazeApp, where: Path, scenario: str) -> dict[str, Any]:
    """Serve `app` and run a scenario of stock/calls.py against it."""
    stubs = stubs_of(app, where)
    async with BlazeServer(app, port=0) as server:
        return await run_client(STOCK_CLIENT, stubs, server.port, scenario)


async def test_stock_client_streams_tokens_and_gets_invalid_argument(tmp_path: Path) -> None:
    seen = await stock_call(chat.app, tmp_path, "chat")
    assert seen["tokens"] == ["a", "b", "c"]
    assert seen["missing_prompt"].startswith("INVALID_ARGUMENT: field 'prompt' is required")


async def test_stock_client_calls_a_unary_model_with_nested_messages(tmp_path: Path) -> None:
    expected = detect.detect(b"cat.jpg", threshold=0.0)
    seen = await stock_call(detect.app, tmp_path, "detect")
    assert seen["boxes"] == [[b.x, b.y, b.score, b.label, True] for b in expected]


async def test_stock_client_streams_chunks_in(tmp_path: Path) -> None:
    seen = await stock_call(transcribe.app, tmp_path, "transcribe")
    assert seen == {"text": "hello", "chunks": 2}


async def test_stock_client_runs_a_bidirectional_stream(tmp_path: Path) -> None:
    seen = await stock_call(tracker.app, tmp_path, "tracker")
    assert seen["answers"] == [[[1, 1]], [[1, 2], [2, 1]]]


async def test_blaze_serve_streams_to_a_stock_client_and_exits_0_on_sigterm(
    tmp_path: Path,
) -> None:
    stubs = stubs_of(chat.app, tmp_path)
    with blaze_serve("examples/chat.py:app") as served:
        assert served.first_line.startswith("blazerpc serving 3 models on 127.0.0.1:")
        seen = await run_client(STOCK_CLIENT, stubs, served.port, "chat")
        assert seen["tokens"] == ["a", "b", "c"]
        served.process.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(served.process.wait, WAIT_S) == 0
