"""The `blaze` executable as a user runs it: a real process, its stdout, stderr and exit code."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLAZE = shutil.which("blaze", path=str(Path(sys.executable).parent)) or "blaze"
SET_PARAM_APP = """\
from blazerpc import BlazeApp
app = BlazeApp()

@app.model("rank")
def rank(ids: set[int]) -> int:
    return len(ids)
"""


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_blaze_proto_prints_a_schema_protoc_compiles(tmp_path: Path) -> None:
    result = _run(BLAZE, "proto", "examples/chat.py:app")
    assert result.returncode == 0, result.stderr
    assert (
        "rpc PredictGenerate(GenerateRequest) returns (stream GenerateResponse);" in result.stdout
    )

    (tmp_path / "blazerpc.proto").write_text(result.stdout, encoding="utf-8")
    compiled = _run(
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{tmp_path}",
        f"--python_out={tmp_path}",
        f"--grpc_python_out={tmp_path}",
        "blazerpc.proto",
        cwd=tmp_path,
    )
    assert compiled.returncode == 0, compiled.stderr
    assert (tmp_path / "blazerpc_pb2_grpc.py").is_file()


def test_unsupported_annotation_fails_at_import_even_under_python_dash_O(tmp_path: Path) -> None:
    (tmp_path / "ranker.py").write_text(SET_PARAM_APP, encoding="utf-8")
    result = _run(sys.executable, "-O", "-c", "import ranker", cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("blazerpc.errors.DefinitionError: model 'rank' (rank in ")
    assert "ranker.py:4): parameter 'ids' is annotated set[int]" in last
    assert "Use list[int]" in last


def test_blaze_proto_reports_a_definition_error_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "ranker.py").write_text(SET_PARAM_APP, encoding="utf-8")
    result = _run(BLAZE, "proto", "ranker.py:app", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("blaze: DefinitionError: model 'rank' (rank in ranker.py:4)")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_debug_prints_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "ranker.py").write_text(SET_PARAM_APP, encoding="utf-8")
    result = _run(BLAZE, "--debug", "proto", "ranker.py:app", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr


def test_blaze_serve_on_a_busy_port_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run(BLAZE, "serve", "examples/chat.py:app", "--port", str(port))
    assert result.returncode == 2
    assert f"blaze: cannot listen on 127.0.0.1:{port}: Address already in use." in result.stderr
    assert "Traceback" not in result.stderr


def test_blaze_serve_on_a_busy_http_port_names_that_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run(
            BLAZE, "serve", "examples/chat.py:app", "--port", "0", "--http-port", str(port)
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} (HTTP): Address already in use." in result.stderr
    assert "Traceback" not in result.stderr


def test_blaze_serve_with_http_drains_quietly_on_sigterm() -> None:
    command = [BLAZE, "serve", "examples/chat.py:app", "--port", "0", "--http-port", "0"]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as server:
        assert server.stdout is not None and server.stderr is not None
        first_line = server.stdout.readline()
        assert ", HTTP on http://127.0.0.1:" in first_line, first_line
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
        stderr = server.stderr.read()
    assert "draining" in stderr
    assert "uvicorn" not in stderr  # uvicorn's own shutdown story stays out of the log
