"""The wheel carries every subpackage, the templates and the Open Inference descriptor.

`pip install .` (not only `-e .`) can render a schema. The wheel is built from a copy of the
source tree, so the test leaves no `build/` folder behind in the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .support import ROOT

RENDER = """\
import blazerpc, blazerpc.wire.proto_text
assert blazerpc.__file__.startswith({site!r}), blazerpc.__file__
app = blazerpc.BlazeApp()

@app.model("echo")
def echo(text: str) -> str:
    return text

print(blazerpc.wire.proto_text.render_proto(app.schema))
"""


def test_an_installed_wheel_renders_from_its_own_templates(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_not_sources)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, source],
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
    assert "blazerpc/openinference/protos/grpc_predict_v2.pb" in names
    for layer in ("schema", "wire", "runtime", "grpc", "http", "openinference", "remote"):
        assert f"blazerpc/{layer}/__init__.py" in names
    tree = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "blazerpc").rglob("__init__.py"))
    assert [name for name in tree if name not in names] == []  # a package left out of the wheel

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


def _not_sources(folder: str, names: list[str]) -> set[str]:
    """What a source checkout holds besides its sources: venvs, caches, earlier builds."""
    return {name for name in names if name in {".venv", ".git", "build"} or "cache" in name}
