"""Every example in README.md and docs/ runs: Python blocks execute, console commands succeed."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from blazerpc import DefinitionError

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
RAISES = "# raises DefinitionError\n"
SERVES = "# serves until"


def _blocks(language: str) -> list[tuple[str, str]]:
    return [
        (f"{doc.relative_to(ROOT)}#{number}", body)
        for doc in DOCS
        for number, (lang, body) in enumerate(FENCE.findall(doc.read_text(encoding="utf-8")))
        if lang == language
    ]


def test_docs_have_examples() -> None:
    assert len(_blocks("python")) >= 4
    assert len(_blocks("console")) >= 4


@pytest.mark.parametrize(("where", "code"), _blocks("python"))
def test_python_example_runs(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    if code.startswith(RAISES):
        with pytest.raises(DefinitionError):
            runpy.run_path(str(script))
    else:
        runpy.run_path(str(script))


@pytest.mark.parametrize(("where", "commands"), _blocks("console"))
def test_console_example_runs(where: str, commands: str, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in commands.splitlines():
        if not line.startswith("$ "):
            continue
        if SERVES in line:
            _serve_then_stop(line[2:].split(SERVES)[0], tmp_path, env)
            continue
        result = subprocess.run(
            line[2:].replace("python ", f"{sys.executable} ", 1),
            shell=True,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{where}: {line}\n{result.stderr}"


def test_readme_schema_excerpt_is_what_blaze_proto_prints() -> None:
    golden = (ROOT / "tests" / "golden" / "chat.proto").read_text(encoding="utf-8")
    (excerpt,) = [body for where, body in _blocks("proto") if where.startswith("README")]
    for line in excerpt.splitlines():
        assert line in golden.splitlines()


def _serve_then_stop(command: str, cwd: Path, env: dict[str, str]) -> None:
    """A serving command: it must announce itself, then exit 0 on SIGTERM."""
    with subprocess.Popen(
        f"exec {command}", shell=True, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().startswith("blazerpc serving ")
        finally:
            server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
