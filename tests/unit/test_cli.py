"""`blaze proto` through click's CliRunner: output, files, and one-line errors."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from blazerpc import __version__
from blazerpc.cli import main
from blazerpc.config import ServerConfig, env_name, flag_name
from tests.apps.registry import GOLDEN

BROKEN_APPS = {
    "raises.py": "import blazerpc\n1 / 0\n",
    "no_app.py": "x = 1\n",
    "set_param.py": (
        "from blazerpc import BlazeApp\n"
        "app = BlazeApp()\n"
        "@app.model('rank')\n"
        "def rank(ids: set[int]) -> int:\n"
        "    return len(ids)\n"
    ),
}


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of examples/ as the working directory: `blaze proto` writes an app's lock file
    next to the app, never into the source tree. The modules it imports are forgotten after."""
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app puts the app's folder first
    for name in ("chat", "detect", "examples", "examples.chat", "examples.detect"):
        monkeypatch.setitem(sys.modules, name, None)  # put back, or removed, at the end
        del sys.modules[name]
    yield tmp_path


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    for name, text in BROKEN_APPS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_proto_prints_the_schema_of_a_file_target(project: Path) -> None:
    result = CliRunner().invoke(main, ["proto", "examples/chat.py:app"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "chat.proto").read_text(encoding="utf-8")
    written = (project / "examples" / "chat.blaze.lock").read_text(encoding="utf-8")
    assert written == (EXAMPLES / "chat.blaze.lock").read_text(encoding="utf-8")


def test_proto_accepts_a_module_target_and_defaults_the_attribute_to_app(project: Path) -> None:
    result = CliRunner().invoke(main, ["proto", "examples.detect"])
    assert result.exit_code == 0, result.output
    assert "rpc PredictDetect(DetectRequest) returns (DetectResponse);" in result.stdout
    assert sys.modules["examples.detect"].__file__ == str(project / "examples" / "detect.py")


def test_proto_writes_a_file_with_dash_o(project: Path) -> None:
    out = project / "chat.proto"
    result = CliRunner().invoke(main, ["proto", "examples/chat.py:app", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert out.read_text(encoding="utf-8") == (GOLDEN / "chat.proto").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("examples/chat", "'examples/chat' is a path without .py: write examples/chat.py:app"),
        ("examples/chat:app", "'examples/chat' is a path without .py: write examples/chat.py:app"),
    ],
)
def test_a_path_without_py_gets_the_target_to_write(target: str, expected: str) -> None:
    result = CliRunner().invoke(main, ["proto", target])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("examples.nope:app", "no module named 'examples.nope'"),
        ("missing/file.py:app", "file 'missing/file.py' does not exist"),
        ("examples.chat:ap", "'examples.chat' has no attribute 'ap'. BlazeApp objects in it: app"),
        ("examples.chat:generate", "examples.chat:generate is a function, not a BlazeApp"),
        (":app", "names no module"),
    ],
)
def test_a_bad_target_is_one_line_and_exit_2(target: str, expected: str) -> None:
    result = CliRunner().invoke(main, ["proto", target])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("raises.py", "raised ZeroDivisionError: division by zero"),
        ("no_app.py", "has no attribute 'app'. The module defines no BlazeApp"),
        ("set_param.py", "parameter 'ids' is annotated set[int]; protobuf has no set type"),
    ],
)
def test_a_broken_app_is_one_line_and_exit_2(broken: Path, file: str, expected: str) -> None:
    result = CliRunner().invoke(main, ["proto", f"{broken / file}:app"])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert result.stderr.count("\n") == 1


def test_debug_shows_the_real_exception(broken: Path) -> None:
    result = CliRunner().invoke(main, ["proto", f"{broken / 'raises.py'}:app", "--debug"])
    assert result.exit_code == 1
    assert isinstance(result.exception, ZeroDivisionError)


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_a_file_named_like_an_imported_module_is_refused(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text("from blazerpc import BlazeApp\napp = BlazeApp()\n")
    result = CliRunner().invoke(main, ["proto", f"{tmp_path / 'json.py'}:app"])
    assert result.exit_code == 2
    assert "would be imported as module 'json', which is already" in result.stderr
    import json

    assert json.dumps([1]) == "[1]"  # the standard library's json is untouched


def test_serve_help_documents_every_option_with_its_variable() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in ServerConfig.__struct_fields__:
        assert flag_name(name) in result.output, name
        assert env_name(name) in result.output, name
    assert "--no-reflection" in result.output
    assert "worker" not in [line.split()[0] for line in result.output.splitlines() if line]
