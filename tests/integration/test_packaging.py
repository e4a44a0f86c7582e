"""The wheel carries the templates: `pip install .` (not only `-e .`) can render a schema."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RENDER = """\
import blazerpc, blazerpc.codegen
assert blazerpc.__file__.startswith({site!r}), blazerpc.__file__
app = blazerpc.BlazeApp()

@app.model("echo")
def echo(text: str) -> str:
    return text

print(blazerpc.codegen.render_proto(app.schema))
"""


def test_an_installed_wheel_renders_from_its_own_templates(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, ROOT],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("blazerpc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "blazerpc/templates/service.proto.j2" in names
    assert "blazerpc/templates/__init__.py" in names
    assert "blazerpc/py.typed" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    render = subprocess.run(
        [sys.executable, "-c", RENDER.format(site=str(site))],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert render.returncode == 0, render.stderr
    assert "rpc PredictEcho(EchoRequest) returns (EchoResponse);" in render.stdout
