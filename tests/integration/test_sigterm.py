"""SIGTERM to `blaze serve` under load: no unary call lost, streams ended cleanly, exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from blazerpc import BlazeClient, RpcError, Status
from tests.apps import draining

from .test_cli_process import BLAZE, ROOT

pytestmark = pytest.mark.anyio
Served = tuple[subprocess.Popen[str], int]


@pytest.fixture
def served() -> Iterator[Served]:
    command = [BLAZE, "serve", "tests/apps/draining.py:app", "--port", "0", "--grace", "2"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert first_line.startswith("blazerpc serving 2 models on 127.0.0.1:"), first_line
        yield process, int(first_line.rsplit(":", 1)[1])
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=20)


async def test_sigterm_finishes_unary_calls_ends_the_stream_and_exits_0(
    served: Served, tmp_path: Path
) -> None:
    process, port = served
    marker = tmp_path / "closed"
    results: list[str] = []
    stream_errors: list[RpcError] = []
    async with BlazeClient(port=port, app=draining.app, timeout=20) as client:

        async def call_slow() -> None:
            results.append(await client.predict("slow", seconds=1.0))

        async def read_stream(started: anyio.Event) -> None:
            with pytest.raises(RpcError) as err:
                async for _ in client.stream("endless", marker=str(marker)):
                    started.set()
            stream_errors.append(err.value)

        with anyio.fail_after(15):
            async with anyio.create_task_group() as group:
                started = anyio.Event()
                group.start_soon(read_stream, started)
                for _ in range(8):
                    group.start_soon(call_slow)
                await started.wait()
                await anyio.sleep(0.2)  # every unary call is in flight, 0.8 s from its answer
                process.send_signal(signal.SIGTERM)
    assert results == ["done"] * 8  # none lost
    assert stream_errors[0].status is Status.UNAVAILABLE
    assert "grace period" in stream_errors[0].message
    assert marker.read_text(encoding="utf-8") == "closed"  # the generator's finally ran
    assert process.wait(timeout=10) == 0


async def test_a_second_signal_exits_at_once_with_status_1(served: Served, tmp_path: Path) -> None:
    process, port = served
    async with BlazeClient(port=port, app=draining.app, timeout=20) as client:
        stream = client.stream("endless", marker=str(tmp_path / "closed"))
        assert await anext(stream) == 0
        process.send_signal(signal.SIGTERM)  # the stream holds the drain for its 2 s grace
        await anyio.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=1.5) == 1
        with pytest.raises(RpcError):
            async for _ in stream:
                pass
    assert "second signal" in (process.stderr.read() if process.stderr else "")


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
