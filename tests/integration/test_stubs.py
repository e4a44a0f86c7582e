"""`blaze stubs`: betterproto stubs generated from our schema call a real server."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from blazerpc import BlazeServer
from blazerpc.cli import main
from examples import chat, detect

from .support import BETTERPROTO_CLIENT, run_client

pytestmark = pytest.mark.anyio


def _generate(target: str, out: Path) -> None:
    result = CliRunner().invoke(main, ["stubs", target, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "blazerpc" / "__init__.py").is_file()


async def test_betterproto_stubs_call_a_unary_model(tmp_path: Path) -> None:
    _generate("examples/detect.py:app", tmp_path)
    expected = detect.detect(b"cat.jpg", threshold=0.0)
    async with BlazeServer(detect.app, port=0) as server:
        seen = await run_client(BETTERPROTO_CLIENT, tmp_path, server.port, "detect")
    assert seen["boxes"] == [[b.x, b.y, b.score, b.label or ""] for b in expected]


async def test_betterproto_stubs_stream_tokens(tmp_path: Path) -> None:
    _generate("examples/chat.py:app", tmp_path)
    async with BlazeServer(chat.app, port=0) as server:
        seen = await run_client(BETTERPROTO_CLIENT, tmp_path, server.port, "chat")
    assert seen["tokens"] == ["a", "b", "c"]


def test_the_stubs_are_typed_dataclasses(tmp_path: Path) -> None:
    _generate("examples/chat.py:app", tmp_path)
    source = (tmp_path / "blazerpc" / "__init__.py").read_text(encoding="utf-8")
    assert "class GenerateRequest(betterproto.Message):" in source
    assert "max_tokens: Optional[int] = betterproto.int64_field(2, optional=True)" in source
    assert "async def predict_generate(" in source
