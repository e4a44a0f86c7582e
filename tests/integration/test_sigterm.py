"""SIGTERM to `blaze serve` under load: no unary call lost, streams ended cleanly, exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from blazerpc import BlazeClient, RpcError, Status
from tests.apps import draining

from .support import BLAZE, ROOT, WAIT_S, blaze_serve, read_line

pytestmark = pytest.mark.anyio
DRAINING = "tests/apps/draining.py:app"


async def test_sigterm_lets_the_unary_calls_in_flight_finish_and_exits_0(tmp_path: Path) -> None:
    release = tmp_path / "release"
    results: list[str] = []
    with blaze_serve(DRAINING, "--grace", "60", stderr=subprocess.PIPE) as served:
        process = served.process
        assert process.stdout is not None and process.stderr is not None
        async with BlazeClient(port=served.port, app=draining.app, timeout=WAIT_S) as client:

            async def call_held() -> None:
                results.append(await client.predict("held", release=str(release)))

            with anyio.fail_after(WAIT_S):
                async with anyio.create_task_group() as group:
                    for _ in range(8):
                        group.start_soon(call_held)
                    started = 0
                    while started < 8:
                        line = await read_line(process.stdout, "held: started")
                        started += line.count("held: started")
                    process.send_signal(signal.SIGTERM)  # all eight are in flight
                    draining_line = await read_line(process.stderr, "draining: ")
                    release.touch()  # they answer during the drain
        assert "draining: 8 calls running" in draining_line
        assert results == ["done"] * 8  # none lost
        assert await anyio.to_thread.run_sync(process.wait, WAIT_S) == 0  # no 60 s grace


async def test_sigterm_ends_an_open_stream_after_the_grace_period_and_exits_0(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "closed"
    with blaze_serve(DRAINING, "--grace", "0.2") as served:
        with anyio.fail_after(WAIT_S):
            async with BlazeClient(port=served.port, app=draining.app, timeout=WAIT_S) as client:
                stream = client.stream("endless", marker=str(marker))
                assert await anext(stream) == 0
                served.process.send_signal(signal.SIGTERM)
                with pytest.raises(RpcError) as err:
                    async for _ in stream:
                        pass
        assert await anyio.to_thread.run_sync(served.process.wait, WAIT_S) == 0
    assert err.value.status is Status.UNAVAILABLE
    assert "grace period" in err.value.message
    assert marker.read_text(encoding="utf-8") == "closed"  # the generator's finally ran


async def test_a_second_signal_exits_at_once_with_status_1(tmp_path: Path) -> None:
    with blaze_serve(DRAINING, "--grace", "60", stderr=subprocess.PIPE) as served:
        process = served.process
        assert process.stderr is not None
        async with BlazeClient(port=served.port, app=draining.app, timeout=WAIT_S) as client:
            stream = client.stream("endless", marker=str(tmp_path / "closed"))
            assert await anext(stream) == 0
            process.send_signal(signal.SIGTERM)  # the stream would hold the drain for 60 s
            await read_line(process.stderr, "draining: ")
            process.send_signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(process.wait, WAIT_S) == 1
            with pytest.raises(RpcError):
                async for _ in stream:
                    pass
        assert "second signal" in process.stderr.read()


FAILING_LIFESPAN = """\
from collections.abc import Iterator
from blazerpc import BlazeApp

app = BlazeApp()


@app.lifespan
def load_weights() -> Iterator[None]:
    raise FileNotFoundError("weights.bin")
    yield


@app.model("noop")
def noop() -> None: ...
"""


def test_a_failing_lifespan_exits_1_naming_the_hook(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(FAILING_LIFESPAN, encoding="utf-8")
    result = subprocess.run(
        [BLAZE, "serve", "broken.py:app", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "blaze: lifespan hook load_weights failed while starting: "
        "FileNotFoundError: weights.bin. The server did not start."
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "70000"], {}, "blaze: option --port (--port=70000): expected `int` <= 65535."),
        ([], {"BLAZE_PORT": "abc"}, "blaze: option --port (BLAZE_PORT='abc'): expected `int`."),
        (
            [],
            {"BLAZE_GRACE": "-1"},
            "blaze: option --grace (BLAZE_GRACE='-1'): expected `float` >= 0.0.",
        ),
    ],
)
def test_a_bad_option_is_one_line_naming_it_and_exit_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [BLAZE, "serve", "examples/chat.py:app", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )
    assert result.returncode == 2
    assert result.stderr == message + "\n"
