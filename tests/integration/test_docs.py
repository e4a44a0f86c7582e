"""Every example in README.md and docs/ runs: Python blocks execute, console commands succeed."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blazerpc import DefinitionError

from .support import ROOT, free_port

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
RAISES = "# raises DefinitionError\n"
SERVES = "# serves until"
HTTP_PORT = re.compile(r"--http-port (\d+)")


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
    # an example may import Ray, which replaces the process's log record factory and SIGTERM
    # handler: the later tests must not inherit them
    factory, on_sigterm = logging.getLogRecordFactory(), signal.getsignal(signal.SIGTERM)
    try:
        if code.startswith(RAISES):
            with pytest.raises(DefinitionError):
                runpy.run_path(str(script))
        else:
            runpy.run_path(str(script))
    finally:
        logging.setLogRecordFactory(factory)
        signal.signal(signal.SIGTERM, on_sigterm)


@pytest.mark.parametrize(("where", "commands"), _blocks("console"))
def test_console_example_runs(where: str, commands: str, tmp_path: Path) -> None:
    """Each `$` line runs and succeeds; while a block's server runs, output must match too."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with contextlib.ExitStack() as servers:
        ports: dict[str, str] = {}
        for line, expected in _commands(commands):
            if SERVES in line:
                command = line.split(SERVES)[0].strip()
                if not command.endswith("&"):  # the server must start, then stop on SIGTERM
                    with _serving(command, tmp_path, env):
                        continue
                command = command.removesuffix("&").strip()
                ports = {port: str(free_port()) for port in HTTP_PORT.findall(command)}
                servers.enter_context(_serving(_with_ports(command, ports), tmp_path, env))
                continue
            result = subprocess.run(
                _with_ports(line, ports).replace("python ", f"{sys.executable} ", 1),
                shell=True,
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, f"{where}: {line}\n{result.stderr}"
            if ports and expected.strip():
                assert _with_ports(expected, ports).strip() == result.stdout.strip(), where


def _commands(block: str) -> list[tuple[str, str]]:
    """Each `$ command` of a block, with the output lines shown under it."""
    commands: list[tuple[str, str]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], ""))
        elif commands:
            command, output = commands[-1]
            commands[-1] = (command, output + line + "\n")
    return commands


def _with_ports(text: str, ports: dict[str, str]) -> str:
    """The documented ports (`localhost:8080`) swapped for free ones, so tests never collide."""
    for documented, free in ports.items():
        text = text.replace(f":{documented}", f":{free}").replace(f" {documented}", f" {free}")
    return text


@contextlib.contextmanager
def _serving(command: str, cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """A server for the rest of a block (`blaze serve ... &`): up until the block ends."""
    command = command if "--port" in command else f"{command} --port 0"
    with subprocess.Popen(
        f"exec {command}", shell=True, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().startswith("blazerpc serving ")
            yield
        finally:
            server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0  # blaze ray stops a Ray cluster too


def test_readme_schema_excerpt_is_what_blaze_proto_prints() -> None:
    golden = (ROOT / "tests" / "golden" / "chat.proto").read_text(encoding="utf-8")
    (excerpt,) = [body for where, body in _blocks("proto") if where.startswith("README")]
    for line in excerpt.splitlines():
        assert line in golden.splitlines()
