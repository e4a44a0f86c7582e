"""Clients as they ship, each in a virtual environment of its own (clients/README.md): MLServer's
documented streaming client code over REST and gRPC, and the KServe SDK's inference clients."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

from blazerpc import BlazeApp, BlazeServer

from .support import run_in_client_venv, serve_http

pytestmark = pytest.mark.anyio

QUESTION = "What is the capital of France?"


class Word(msgspec.Struct):
    """The result of MLServer's text-model: one output, named `output`."""

    output: str


def _text_model() -> BlazeApp:
    """MLServer's streaming example model (its TextModel), as a blazerpc function."""
    app = BlazeApp()

    @app.model("text-model", streaming=True)
    async def text_model(prompt: str) -> AsyncIterator[Word]:
        for i, word in enumerate(prompt.split(" ")):
            yield Word(output=word if i == 0 else " " + word)

    return app


WORDS = [str([word if i == 0 else " " + word]) for i, word in enumerate(QUESTION.split(" "))]
"""What MLServer's client code prints: `StringCodec.decode_output` of each response."""


async def test_mlservers_rest_generate_stream_client_streams_every_word() -> None:
    async with serve_http(_text_model()) as served:
        printed = await run_in_client_venv(
            "mlserver", "mlserver_rest.py", str(served.server.http_port)
        )
    assert printed == WORDS


async def test_mlservers_grpc_model_stream_infer_client_streams_every_word() -> None:
    async with BlazeServer(_text_model(), port=0, open_inference_stream="mlserver") as server:
        printed = await run_in_client_venv("mlserver", "mlserver_grpc.py", str(server.port))
    assert printed == WORDS


def _add() -> BlazeApp:
    app = BlazeApp()

    @app.model("add")
    def add(a: int, b: int) -> int:
        return a + b

    return app


async def test_the_kserve_sdks_rest_and_grpc_clients_infer() -> None:
    async with serve_http(_add()) as served:
        printed = await run_in_client_venv(
            "kserve", "kserve_v2.py", str(served.server.http_port), str(served.server.port)
        )
    assert printed == [
        "rest live True",
        "rest ready True",
        "rest add result [42]",
        "grpc ready True",
        "grpc add result [42]",
    ]
