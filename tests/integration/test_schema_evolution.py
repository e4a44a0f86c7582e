"""A client compiled from last month's .proto keeps working after the model changes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from blazerpc import BlazeServer
from blazerpc.cli import main
from blazerpc.target import load_app
from blazerpc.wire.descriptor import file_descriptor

from .support import compile_stubs, stock_unary

pytestmark = pytest.mark.anyio

V1 = """\
from blazerpc import BlazeApp

app = BlazeApp(package="evolution")


@app.model("score")
def score(text: str, top_k: int = 5, boost: float = 0.0) -> str:
    return f"{text}|{top_k}|{boost}"
"""
V2 = """\
from blazerpc import BlazeApp

app = BlazeApp(package="evolution")


@app.model("score")
def score(lang: str = "en", boost: float = 0.0, text: str = "", top_k: int = 5) -> str:
    return f"{text}|{top_k}|{boost}|{lang}"
"""
V3_REMOVED = """\
from blazerpc import BlazeApp

app = BlazeApp(package="evolution")


@app.model("score")
def score(text: str = "", top_k: int = 5) -> str:
    return f"{text}|{top_k}"
"""


def _app_file(where: Path) -> Path:
    """A module name of its own per test: the loader refuses to shadow one already imported."""
    return where / f"scoring_{abs(hash(where)) % 10**8}.py"


def _blaze_proto(app_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["proto", str(_app_file(app_dir)), *args])
    return result.exit_code, result.stdout, result.stderr


def _stock_stubs(proto_text: str, where: Path) -> ModuleType:
    """Compile the .proto with protoc and import its message module (the 'old client')."""
    compile_stubs(proto_text, "evolution.proto", where)
    spec = importlib.util.spec_from_file_location("evolution_pb2", where / "evolution_pb2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_an_old_stock_client_gets_correct_answers_after_reorder_and_add(
    tmp_path: Path,
) -> None:
    app_dir = tmp_path / "service"
    app_dir.mkdir()
    _app_file(app_dir).write_text(V1, encoding="utf-8")
    code, v1_proto, _ = _blaze_proto(app_dir)
    assert code == 0 and _app_file(app_dir).with_suffix(".blaze.lock").is_file()
    stubs_dir = tmp_path / "client"
    stubs_dir.mkdir()
    old = _stock_stubs(v1_proto, stubs_dir)

    _app_file(app_dir).write_text(V2, encoding="utf-8")  # reordered, one parameter added
    assert _blaze_proto(app_dir, "--check")[0] == 0
    code, v2_proto, _ = _blaze_proto(app_dir)
    assert code == 0
    assert "optional string text = 1;" in v2_proto and "optional string lang = 4;" in v2_proto

    app = load_app(f"{_app_file(app_dir)}:app")
    async with BlazeServer(app, port=0) as server:
        reply = await stock_unary(
            server.port,
            "/evolution.InferenceService/PredictScore",
            old.ScoreRequest(text="hi", top_k=3, boost=0.5),
            old.ScoreResponse,
        )
    assert reply.result == "hi|3|0.5|en"  # every old field landed on the right parameter


def test_a_removed_field_is_reserved_in_text_and_descriptor(
    tmp_path: Path, protoc_include: Path
) -> None:
    _app_file(tmp_path).write_text(V1, encoding="utf-8")
    assert _blaze_proto(tmp_path)[0] == 0
    _app_file(tmp_path).write_text(V3_REMOVED, encoding="utf-8")
    code, text, _ = _blaze_proto(tmp_path)
    assert code == 0
    assert 'reserved 3;  // removed fields: never reuse\n  reserved "boost";' in text
    (tmp_path / "evolution.proto").write_text(text, encoding="utf-8")
    out = tmp_path / "set.pb"
    args = [f"-I{tmp_path}", f"-I{protoc_include}", f"--descriptor_set_out={out}"]
    assert protoc.main(["protoc", *args, str(tmp_path / "evolution.proto")]) == 0
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    assert compiled == file_descriptor(load_app(f"{_app_file(tmp_path)}:app").schema)


def test_blaze_proto_refuses_a_breaking_change_unless_allowed(tmp_path: Path) -> None:
    _app_file(tmp_path).write_text(V1, encoding="utf-8")
    assert _blaze_proto(tmp_path)[0] == 0
    lock_before = _app_file(tmp_path).with_suffix(".blaze.lock").read_text(encoding="utf-8")
    _app_file(tmp_path).write_text(V1.replace("text: str,", "text: bytes,"), encoding="utf-8")

    code, stdout, _ = _blaze_proto(tmp_path, "--check")
    assert code == 1
    assert stdout == (
        "breaking: ScoreRequest.text: type changed from optional string to optional bytes\n"
    )
    code, stdout, stderr = _blaze_proto(tmp_path)
    assert code == 1 and stdout == ""
    assert "1 breaking changes against" in stderr and "--allow-breaking" in stderr
    assert _app_file(tmp_path).with_suffix(".blaze.lock").read_text(encoding="utf-8") == lock_before
    code, stdout, _ = _blaze_proto(tmp_path, "--allow-breaking")
    assert code == 0 and "optional bytes text = 1;" in stdout
    assert _blaze_proto(tmp_path, "--check")[0] == 0


def test_check_without_a_lock_fails_and_says_how_to_start(tmp_path: Path) -> None:
    _app_file(tmp_path).write_text(V1, encoding="utf-8")
    code, _, stderr = _blaze_proto(tmp_path, "--check")
    assert code == 1
    assert "no lock file at" in stderr and "run `blaze proto` once" in stderr
    assert not _app_file(tmp_path).with_suffix(".blaze.lock").exists()
