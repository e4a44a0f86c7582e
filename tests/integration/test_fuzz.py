"""A bounded, seeded fuzzer: random and mutated request bodies on all four shapes, through
stock grpcio, against one `blaze serve`. Whatever the bytes, a call ends with a status that
says the request was wrong (or OK), never INTERNAL or a dropped connection, and the server
logs no error. Seeded (`derandomize`): every run sends the same bodies."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blazerpc.wire.protobuf import SchemaCodec
from tests.apps.every_type import app

from .support import ServeProcess, blaze_serve

SERVICE = "/fixture.types.EveryType"
CLASSES = SchemaCodec(app.schema).classes
ACCEPTED = {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CANCELLED"}
FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
VALID_TOTAL = CLASSES["TotalRequest"](values=1.5).SerializeToString()


@pytest.fixture(scope="module")
def served() -> Iterator[ServeProcess]:
    with blaze_serve(
        "tests/apps/every_type.py:app", "--log-level", "warning", stderr=subprocess.PIPE
    ) as process:
        yield process
        process.process.terminate()
        _, log = process.process.communicate(timeout=30)
        assert "Traceback" not in log and "ERROR" not in log, log


@pytest.fixture(scope="module")
def channel(served: ServeProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as opened:
        yield opened


def _mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """`valid` with bytes flipped, cut or appended: near-misses, which reach the decoder."""
    flips = st.lists(st.tuples(st.integers(0, max(len(valid) - 1, 0)), st.integers(0, 255)))
    return st.tuples(flips, st.integers(0, len(valid)), st.binary(max_size=8)).map(
        lambda m: _apply(valid, *m)
    )


def _apply(valid: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
    body = bytearray(valid)
    for where, value in flips:
        if where < len(body):
            body[where] = value
    return bytes(body[:cut]) + tail


def _bodies(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=256), _mutated(valid))


def _code(call: object) -> str:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as err:
        return str(err.code().name)
    return "OK"


@FUZZ
@given(body=_bodies(CLASSES["EchoAllRequest"]().SerializeToString() + b"\x08\x01\x12\x02hi"))
def test_unary_bodies(channel: grpc.Channel, body: bytes) -> None:
    echo = channel.unary_unary(f"{SERVICE}/PredictEchoAll")
    assert _code(lambda: echo(body, timeout=5)) in ACCEPTED


@FUZZ
@given(body=_bodies(b"\x08\x03"))
def test_server_streaming_bodies(channel: grpc.Channel, body: bytes) -> None:
    ticks = channel.unary_stream(f"{SERVICE}/PredictTicks")

    def first_items() -> None:
        call = ticks(body, timeout=5)
        for i, _ in enumerate(call):
            if i == 3:  # a huge n streams on: three items are enough
                call.cancel()
                break

    assert _code(first_items) in ACCEPTED


@FUZZ
@given(bodies=st.lists(_bodies(VALID_TOTAL), max_size=5))
def test_client_streaming_bodies(channel: grpc.Channel, bodies: list[bytes]) -> None:
    total = channel.stream_unary(f"{SERVICE}/PredictTotal")
    assert _code(lambda: total(iter([VALID_TOTAL, *bodies]), timeout=5)) in ACCEPTED


@FUZZ
@given(bodies=st.lists(_bodies(CLASSES["EchoBoxesRequest"]().SerializeToString()), max_size=5))
def test_bidirectional_bodies(channel: grpc.Channel, bodies: list[bytes]) -> None:
    echo = channel.stream_stream(f"{SERVICE}/PredictEchoBoxes")
    assert _code(lambda: list(echo(iter(bodies), timeout=5))) in ACCEPTED


def test_the_server_still_answers_after_the_fuzz(channel: grpc.Channel) -> None:
    total = channel.stream_unary(
        f"{SERVICE}/PredictTotal",
        response_deserializer=CLASSES["TotalResponse"].FromString,
    )
    assert total(iter([VALID_TOTAL, VALID_TOTAL]), timeout=5).result == 3.0
