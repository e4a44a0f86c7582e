"""blazerpc: serve plain Python model functions over gRPC, typed end to end."""

from __future__ import annotations

from importlib.metadata import version

from blazerpc.app import BlazeApp, Registry
from blazerpc.errors import BlazeError, DefinitionError

__all__ = ("BlazeApp", "BlazeError", "DefinitionError", "Registry", "__version__")

__version__ = version("blazerpc")
