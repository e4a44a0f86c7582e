"""The `blaze` executable as a user runs it: a real process, its stdout, stderr and exit code."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from .support import BLAZE, ROOT, WAIT_S, blaze_serve

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
    shutil.copytree(ROOT / "examples", tmp_path / "examples")  # proto writes the lock next to it
    result = _run(BLAZE, "proto", "examples/chat.py:app", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "rpc PredictGenerate(GenerateRequest) returns (stream GenerateResponse);" in result.stdout
    )

    assert (tmp_path / "examples" / "chat.blaze.lock").read_text(encoding="utf-8") == (
        ROOT / "examples" / "chat.blaze.lock"
    ).read_text(encoding="utf-8")  # the committed lock is what it writes
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
    options = ("--http-port", "0")
    with blaze_serve("examples/chat.py:app", *options, stderr=subprocess.PIPE) as served:
        assert ", HTTP on http://127.0.0.1:" in served.first_line, served.first_line
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=WAIT_S) == 0
        assert served.process.stderr is not None
        stderr = served.process.stderr.read()
    assert "draining" in stderr
    assert "uvicorn" not in stderr  # uvicorn's own shutdown story stays out of the log


def test_blaze_serve_logs_one_access_line_per_call_in_order() -> None:
    with blaze_serve("examples/chat.py:app", "--http-port", "0", stderr=subprocess.PIPE) as served:
        http_port = served.first_line.rsplit(":", 1)[1].strip()
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=WAIT_S) as http:
            streamed = http.post("/models/generate", json={"prompt": "a b c"})
            refused = http.post("/models/generate", json={"prompt": 5})
        assert streamed.text.count("data: {") == 4 and refused.status_code == 400
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=WAIT_S) == 0
        assert served.process.stderr is not None
        stderr = served.process.stderr.read()
    lines = [line for line in stderr.splitlines() if line.startswith("INFO blazerpc.access: ")]
    assert len(lines) == 2, stderr
    assert lines[0].startswith("INFO blazerpc.access: generate server_streaming OK ")
    assert " items=3 " in lines[0] and re.search(r" via=http id=[0-9a-f]{16}$", lines[0])
    assert lines[1].startswith("INFO blazerpc.access: generate server_streaming INVALID_ARGUMENT ")


OWN_HANDLER_APP = """\
import logging
from blazerpc import BlazeApp

own = logging.FileHandler("own.log")
own.setFormatter(logging.Formatter("OWN %(name)s %(message)s"))
logging.getLogger().addHandler(own)
app = BlazeApp()

@app.model("add")
def add(a: int, b: int) -> int:
    return a + b
"""


def test_blaze_serve_access_lines_reach_the_apps_own_handlers(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(OWN_HANDLER_APP, encoding="utf-8")
    with blaze_serve("app.py:app", "--http-port", "0", cwd=tmp_path) as served:
        http_port = served.first_line.rsplit(":", 1)[1].strip()
        answer = httpx.post(f"http://127.0.0.1:{http_port}/models/add", json={"a": 1, "b": 2})
        assert answer.json() == {"result": 3}
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=WAIT_S) == 0
    own = (tmp_path / "own.log").read_text(encoding="utf-8").splitlines()
    assert [line for line in own if line.startswith("OWN blazerpc.access add unary OK ")], own


def test_blaze_serve_lists_each_model_after_its_first_line() -> None:
    with blaze_serve("examples/chat.py:app") as served:
        assert served.process.stdout is not None
        lines = [served.process.stdout.readline().rstrip("\n") for _ in range(3)]
    assert lines == [
        "  generate           server_streaming  /blazerpc.InferenceService/PredictGenerate",
        "  generate-sync      server_streaming  /blazerpc.InferenceService/PredictGenerateSync",
        "  generate-filtered  server_streaming  /blazerpc.InferenceService/PredictGenerateFiltered",
    ]


def test_blaze_serve_says_while_lifespan_hooks_run_and_warns_of_an_app_with_no_models(
    tmp_path: Path,
) -> None:
    (tmp_path / "empty.py").write_text(
        "from collections.abc import Iterator\n"
        "from blazerpc import BlazeApp\n"
        "app = BlazeApp()\n"
        "@app.lifespan\n"
        "def load() -> Iterator[None]:\n"
        "    yield\n",
        encoding="utf-8",
    )
    with blaze_serve("empty.py:app", cwd=tmp_path, stderr=subprocess.PIPE) as served:
        assert served.first_line.startswith("blazerpc serving 0 models on ")
        served.process.send_signal(signal.SIGTERM)
        assert served.process.stderr is not None
        log = served.process.stderr.read()
    assert "empty.py:app has no models: decorate a function with @app.model(" in log
    assert "INFO blazerpc.server: running 1 lifespan hook" in log
    assert re.search(r"INFO blazerpc.server: lifespan hooks ready in \d+\.\d s", log), log
