"""gRPC server reflection (v1 and v1alpha), answering from the descriptor built from the schema.

grpcurl, Postman and `BlazeClient` without an app use it to list the services and describe
their messages with no `.proto` file. Answers come from a private pool holding our file, the
well-known types it imports and the health and reflection files, so every service listed can
also be described. (grpclib's own reflection service needs its generated modules in protobuf's
default pool, where they clash with grpcio-reflection's: see protocols.py.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor, descriptor_pb2
from grpclib.const import Cardinality, Handler
from grpclib.server import Stream

from blazerpc.errors import UnknownNameError, WireError, to_status
from blazerpc.grpc.h2 import IServable
from blazerpc.grpc.protocols import HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA, Protocol
from blazerpc.schema.naming import rpc_path
from blazerpc.schema.spec import ServiceSpec
from blazerpc.wire.descriptor import schema_pool

__all__ = ("ReflectionService", "with_reflection")


def with_reflection(
    schema: ServiceSpec, services: list[IServable], protocols: Sequence[Protocol] = ()
) -> list[IServable]:
    """`services` plus the reflection services (v1 and v1alpha) that list and describe them.

    `protocols` are the other protocols served (the Open Inference Protocol), listed first.
    """
    protocols = [*protocols, HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA]
    pool = schema_pool(schema, tuple(protocol.file for protocol in protocols))
    listed = [schema.full_name, *(protocol.service for protocol in protocols)]
    versions = (REFLECTION_V1, REFLECTION_V1ALPHA)
    return [*services, *(ReflectionService(version, listed, pool) for version in versions)]


class ReflectionService:
    """One version of the reflection protocol, over one pool of descriptors."""

    def __init__(self, protocol: Protocol, listed: list[str], pool: Any) -> None:
        self._protocol = protocol
        self._listed = listed
        self._pool = pool
        self._response = protocol.classes["ServerReflectionResponse"]

    def __mapping__(self) -> dict[str, Handler]:
        return {
            rpc_path(self._protocol.service, "ServerReflectionInfo"): Handler(
                self.info,
                Cardinality.STREAM_STREAM,
                self._protocol.classes["ServerReflectionRequest"],
                self._response,
            )
        }

    async def info(self, stream: Stream[Any, Any]) -> None:
        """Answer each request of the caller's stream, in order."""
        async for request in stream:
            await stream.send_message(self._answer(request))

    def _answer(self, request: Any) -> Any:
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                services = [{"name": name} for name in self._listed]
                return self._response(list_services_response={"service": services})
            if kind == "file_by_filename":
                return self._file(self._pool.FindFileByName(request.file_by_filename))
            if kind == "file_containing_symbol":
                symbol = request.file_containing_symbol
                return self._file(self._pool.FindFileContainingSymbol(symbol))
            if kind == "file_containing_extension":
                return self._error(UnknownNameError("this server's schema has no extensions"))
            if kind == "all_extension_numbers_of_type":
                name = request.all_extension_numbers_of_type
                self._pool.FindMessageTypeByName(name)  # known type: it has no extensions
                return self._response(all_extension_numbers_response={"base_type_name": name})
        except KeyError:
            return self._error(
                UnknownNameError(f"{getattr(request, kind)!r} is not in this server's schema")
            )
        return self._error(WireError("the request asks for nothing this server knows"))

    def _file(self, file: descriptor.FileDescriptor) -> Any:
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        data = proto.SerializeToString()
        return self._response(file_descriptor_response={"file_descriptor_proto": [data]})

    def _error(self, error: Exception) -> Any:
        status, message = to_status(error, "", service="reflection")
        return self._response(error_response={"error_code": status.value, "error_message": message})
