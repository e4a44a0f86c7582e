"""`blaze ray`, the command, as a user runs it: its own local Ray cluster, then gone."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from blazerpc.target import load_app
from blazerpc.wire.proto_text import render_proto

from .support import BLAZE, ROOT, STOCK_CLIENT, blaze_serve, compile_stubs, run_client

pytestmark = [pytest.mark.anyio, pytest.mark.ray]


def blaze_ray(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`blaze ray ARGS` run to its end (a bound far beyond a cluster's start and stop)."""
    return subprocess.run(
        [BLAZE, "ray", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.anyio
async def test_blaze_ray_serves_the_chat_example_to_a_stock_grpcio_client(tmp_path: Path) -> None:
    """The issue's check: two replicas per model on a local cluster, tokens streamed through
    stubs compiled from `blaze proto`; SIGTERM drains, deletes and stops the cluster (exit 0)."""
    options = ("--address", "local", "--replicas", "2", "--cluster-cpus", "2")
    stubs = compile_stubs(
        render_proto(load_app("examples/chat.py:app").schema), "blazerpc.proto", tmp_path
    )
    with blaze_serve(
        "examples/chat.py:app", *options, command="ray", stderr=subprocess.PIPE
    ) as served:
        model_lines = [served.process.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        seen = await run_client(STOCK_CLIENT, stubs, served.port, "chat")
        served.process.send_signal(signal.SIGTERM)
        exit_status = served.process.wait(timeout=60)
        log = served.process.stderr.read()  # type: ignore[union-attr]
    assert served.first_line.startswith("blazerpc serving 3 models on 127.0.0.1:")
    assert [line.split()[0] for line in model_lines] == [
        "generate",
        "generate-sync",
        "generate-filtered",
    ]
    assert all(line.rstrip().endswith("2 replicas, 0.25 CPU") for line in model_lines)
    assert seen["tokens"] == ["a", "b", "c"]
    assert seen["missing_prompt"].startswith("INVALID_ARGUMENT")
    assert exit_status == 0, log[-3000:]
    assert "Traceback" not in log


def test_blaze_ray_refuses_bad_placement_flags_in_one_line() -> None:
    result = blaze_ray(ROOT, "examples/chat.py:app", "--replicas", "nope=2", "--num-cpus", "x")
    assert result.returncode == 2
    assert result.stderr.startswith("blaze: ")
    assert "option --num-cpus 'x': 'x' is not a number" in result.stderr


BROKEN = """
from collections.abc import AsyncIterator

from blazerpc import BlazeApp

app = BlazeApp()


@app.lifespan
async def weights() -> AsyncIterator[None]:
    raise RuntimeError("weights file missing")
    yield


@app.model("double")
async def double(x: int) -> int:
    return 2 * x
"""


def test_blaze_ray_says_why_a_model_did_not_start(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(BROKEN, encoding="utf-8")
    result = blaze_ray(tmp_path, "broken.py:app", "--port", "0", "--cluster-cpus", "2")
    assert result.returncode == 1
    (said,) = [line for line in result.stderr.splitlines() if line.startswith("blaze: ")]
    assert "model 'double' did not start on Ray" in said
    assert "RuntimeError: weights file missing" in said
    assert "blazerpc serving" not in result.stdout  # no first line: it never served


CODE_BOUNDS = """
from blazerpc import BlazeApp, Placement

app = BlazeApp()


@app.model("double", placement=Placement(min_replicas=2, max_replicas=8))
async def double(x: int) -> int:
    return 2 * x
"""


def test_a_flag_that_does_not_fit_the_codes_placement_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bounded.py").write_text(CODE_BOUNDS, encoding="utf-8")
    result = blaze_ray(tmp_path, "bounded.py:app", "--max-replicas", "1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("blaze: model 'double': ")
    assert "the lower bound is above the upper one" in result.stderr


def test_sigterm_while_the_models_deploy_stops_the_deploy(tmp_path: Path) -> None:
    """A replica that cannot be placed (a GPU on a machine without one) never starts: SIGTERM
    stops waiting for it, deletes what was deployed, stops the cluster and exits 0."""
    command = [BLAZE, "ray", "examples/chat.py:app", "--port", "0", "--cluster-cpus", "2"]
    with subprocess.Popen(
        [*command, "--num-gpus", "generate=1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stderr is not None
            while "deploying 3 models on Ray" not in (line := process.stderr.readline()):
                assert line, "blaze ray ended before it deployed"
            process.send_signal(signal.SIGTERM)
            status = process.wait(timeout=120)  # deleting gives up on the unplaced one
        finally:
            if process.poll() is None:
                process.kill()
        out, err = process.communicate()
    assert status == 0, err[-2000:]
    assert "blazerpc serving" not in out
