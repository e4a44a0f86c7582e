"""blazerpc: serve plain Python model functions over gRPC, typed end to end."""

from __future__ import annotations

from importlib.metadata import version

from blazerpc.app import BlazeApp, Registry
from blazerpc.client import BlazeClient
from blazerpc.config import ConfigError, ServerConfig
from blazerpc.context import Call, Context
from blazerpc.errors import (
    BlazeError,
    DefinitionError,
    LifespanError,
    ModelError,
    RpcError,
    Status,
    WireError,
)
from blazerpc.grpc.h2 import GracefulChannel
from blazerpc.schema.markers import (
    Batching,
    Continuous,
    Field,
    Placement,
    Skip,
    Step,
    Stop,
    Tensor,
)
from blazerpc.server import BlazeServer

__all__ = (
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

__version__ = version("blazerpc")
