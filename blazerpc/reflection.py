"""gRPC server reflection (v1 and v1alpha), answering from the descriptor built from the schema.

grpcurl, Postman and `BlazeClient` without an app use it to list the service and describe its
messages with no `.proto` file. grpclib serves the protocol; this module gives it a private
pool holding our file, the well-known types it imports, and the health and reflection files,
so every service it lists can also be described.
"""

from __future__ import annotations

from grpclib._typing import IServable
from grpclib.health.v1 import health_pb2
from grpclib.reflection.service import ServerReflection
from grpclib.reflection.v1 import reflection_pb2 as reflection_v1_pb2
from grpclib.reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2

from blazerpc.descriptor import schema_pool
from blazerpc.schema import ServiceSpec

__all__ = ("with_reflection",)

_PROTOCOL_FILES = (
    health_pb2.DESCRIPTOR,
    reflection_v1_pb2.DESCRIPTOR,
    reflection_v1alpha_pb2.DESCRIPTOR,
)


def with_reflection(schema: ServiceSpec, services: list[IServable]) -> list[IServable]:
    """`services` plus the reflection services (v1 and v1alpha) that list and describe them."""
    pool = schema_pool(schema, _PROTOCOL_FILES)
    return list(ServerReflection.extend(services, pool=pool))
