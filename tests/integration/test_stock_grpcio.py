"""Stock grpcio stubs, compiled from `blaze proto` output, call every shape of a real server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from grpc_tools import protoc

from blazerpc import BlazeApp
from blazerpc.server import BlazeServer
from blazerpc.wire.proto_text import render_proto
from examples import chat, detect, tracker, transcribe

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
CALLS = Path(__file__).parent / "stock" / "calls.py"


def compile_stubs(app: BlazeApp, where: Path) -> Path:
    """`blaze proto` output -> blazerpc_pb2.py and blazerpc_pb2_grpc.py in `where`."""
    (where / app.schema.file_name).write_text(render_proto(app.schema), encoding="utf-8")
    args = [f"-I{where}", f"--python_out={where}", f"--grpc_python_out={where}"]
    assert protoc.main(["protoc", *args, str(where / app.schema.file_name)]) == 0
    return where


async def stock_call(stubs: Path, port: int, scenario: str) -> dict[str, Any]:
    result = await anyio.run_process(
        [sys.executable, str(CALLS), str(stubs), str(port), scenario], check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    seen: dict[str, Any] = json.loads(result.stdout)
    return seen


async def test_stock_client_streams_tokens_and_gets_invalid_argument(tmp_path: Path) -> None:
    async with BlazeServer(chat.app, port=0) as server:
        seen = await stock_call(compile_stubs(chat.app, tmp_path), server.port, "chat")
    assert seen["tokens"] == ["a", "b", "c"]
    assert seen["missing_prompt"].startswith("INVALID_ARGUMENT: field 'prompt' is required")


async def test_stock_client_calls_a_unary_model_with_nested_messages(tmp_path: Path) -> None:
    expected = detect.detect(b"cat.jpg", threshold=0.0)
    async with BlazeServer(detect.app, port=0) as server:
        seen = await stock_call(compile_stubs(detect.app, tmp_path), server.port, "detect")
    assert seen["boxes"] == [[b.x, b.y, b.score, b.label, True] for b in expected]


async def test_stock_client_streams_chunks_in(tmp_path: Path) -> None:
    async with BlazeServer(transcribe.app, port=0) as server:
        seen = await stock_call(compile_stubs(transcribe.app, tmp_path), server.port, "transcribe")
    assert seen == {"text": "hello", "chunks": 2}


async def test_stock_client_runs_a_bidirectional_stream(tmp_path: Path) -> None:
    async with BlazeServer(tracker.app, port=0) as server:
        seen = await stock_call(compile_stubs(tracker.app, tmp_path), server.port, "tracker")
    assert seen["answers"] == [[[1, 1]], [[1, 2], [2, 1]]]


def test_blaze_serve_streams_to_a_stock_client_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    stubs = compile_stubs(chat.app, tmp_path)
    blaze = Path(sys.executable).parent / "blaze"
    with (
        (tmp_path / "server.log").open("w") as log,
        subprocess.Popen(
            [str(blaze), "serve", "examples/chat.py:app", "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        ) as server,
    ):
        try:
            assert server.stdout is not None
            first = server.stdout.readline().strip()
            assert first.startswith("blazerpc serving 3 models on 127.0.0.1:")
            port = int(first.rsplit(":", 1)[1])
            call = subprocess.run(
                [sys.executable, str(CALLS), str(stubs), str(port), "chat"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert call.returncode == 0, call.stderr
            assert json.loads(call.stdout)["tokens"] == ["a", "b", "c"]
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=10) == 0
