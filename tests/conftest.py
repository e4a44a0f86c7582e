"""Shared fixtures: the anyio backend, golden files, protoc, and Hypothesis kept out of the tree."""

from __future__ import annotations

import functools
import importlib.resources
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis keeps its caches in a temporary folder, removed at the end, instead of
    .hypothesis/ in the working directory: its pytest plugin writes them while collecting, and
    no test run leaves files in the source tree."""
    home = tempfile.mkdtemp(prefix="blazerpc-hypothesis-")
    config.add_cleanup(functools.partial(shutil.rmtree, home, ignore_errors=True))
    set_hypothesis_home_dir(home)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite tests/golden/ from the current code (a wire change: review the diff).",
    )


@pytest.fixture
def anyio_backend() -> str:
    """grpclib is asyncio-only."""
    return "asyncio"


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(scope="session")
def protoc_include() -> Path:
    """The well-known types (timestamp.proto, ...) that grpcio-tools ships."""
    return Path(str(importlib.resources.files("grpc_tools") / "_proto"))
