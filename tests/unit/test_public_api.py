"""What users import keeps importing: the names of `blazerpc`, and the modules docs point to."""

from __future__ import annotations

import inspect

import blazerpc
import blazerpc.errors
import blazerpc.testing

PUBLIC = (
    "Batching",
    "BlazeApp",
    "BlazeClient",
    "BlazeError",
    "BlazeServer",
    "Call",
    "ConfigError",
    "Context",
    "Continuous",
    "DefinitionError",
    "Field",
    "GracefulChannel",
    "LifespanError",
    "ModelError",
    "Placement",
    "Registry",
    "RpcError",
    "ServerConfig",
    "Skip",
    "Status",
    "Step",
    "Stop",
    "Tensor",
    "WireError",
    "__version__",
)


def test_every_public_name_imports_from_the_package() -> None:
    assert blazerpc.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(blazerpc, name) is not None


def test_errors_and_serve_app_keep_their_modules() -> None:
    assert blazerpc.errors.DefinitionError is blazerpc.DefinitionError
    assert list(inspect.signature(blazerpc.testing.serve_app).parameters)[0] == "app"
