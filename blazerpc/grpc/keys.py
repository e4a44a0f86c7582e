"""API keys over gRPC: every method of every service needs one, but those left open.

The check wraps each handler of the services a server serves, so a service added later is
covered without a change here. Left open: the paths the server names (health, the Open
Inference readiness probes, reflection when public).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from grpclib.const import Handler
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from blazerpc.errors import UnauthenticatedError, to_status
from blazerpc.grpc.h2 import IServable
from blazerpc.grpc.service import GrpcCall, send_failure
from blazerpc.grpc.wrapping import wrapped
from blazerpc.security.keys import ApiKeys

__all__ = ("require_keys",)


def require_keys(
    services: Sequence[IServable], keys: ApiKeys, open_paths: Collection[str]
) -> list[IServable]:
    """`services` whose methods, but `open_paths`, refuse a call without a valid key."""
    return wrapped(
        services,
        lambda path, handler: handler if path in open_paths else _checked(handler, keys, path),
    )


def _checked(handler: Handler, keys: ApiKeys, path: str) -> Handler:
    function: Callable[[Stream[Any, Any]], Awaitable[None]] = handler.func

    async def checked(stream: Stream[Any, Any]) -> None:
        values = stream.metadata.getall("authorization", []) if stream.metadata else []
        try:
            keys.check([v for v in values if isinstance(v, str)], header="metadata")
        except UnauthenticatedError as error:
            call = GrpcCall(stream)  # a refused call has an id too, in its trailers and the log
            status, message = to_status(error, "", service=f"{path} [request id {call.request_id}]")
            await send_failure(stream, call, GRPCError(status, message))
            return
        await function(stream)

    return Handler(checked, handler.cardinality, handler.request_type, handler.reply_type)
