"""Shared fixtures: the anyio backend, golden files and protoc."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


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
