"""The standard `grpc.health.v1.Health` service, for Kubernetes probes, load balancers and grpcurl.

Names answered: `""` (the whole server), the service's full name (`blazerpc.InferenceService`)
and each model's name (`generate`). All are NOT_SERVING while the models load and while the
server drains, SERVING in between; any other name is NOT_FOUND (Watch: SERVICE_UNKNOWN).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from grpclib.const import Cardinality, Handler
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from blazerpc.errors import UnknownNameError, to_status
from blazerpc.grpc.protocols import HEALTH
from blazerpc.schema.naming import rpc_path

__all__ = ("CHECK_PATH", "HealthService")

_Request = HEALTH.classes["HealthCheckRequest"]
_Response = HEALTH.classes["HealthCheckResponse"]
_SERVING, _NOT_SERVING, _SERVICE_UNKNOWN = 1, 2, 3
HealthStream = Stream[Any, Any]
CHECK_PATH = rpc_path(HEALTH.service, "Check")
WATCH_PATH = rpc_path(HEALTH.service, "Watch")


class HealthService:
    """Answers Check and Watch from one switch, `set_serving()`, that the server flips, and
    one per model, `set_model_serving()`, for models whose replicas can be down on their own."""

    def __init__(self, names: Iterable[str], *, lists_names: bool = True) -> None:
        self.names = frozenset(("", *names))
        self._lists_names = lists_names  # off when calls need a key: probes are open to all
        self._is_serving = False
        self._down: set[str] = set()
        self._changed = asyncio.Event()

    def set_serving(self, is_serving: bool) -> None:
        """Change the answer; open Watch calls get the new status at once."""
        if is_serving != self._is_serving:
            self._is_serving = is_serving
            self._tell_watchers()

    def set_model_serving(self, name: str, is_serving: bool) -> None:
        """Change one model's answer (NOT_SERVING while the server's is, whatever this says)."""
        if is_serving == (name not in self._down):
            return
        if is_serving:
            self._down.discard(name)
        else:
            self._down.add(name)
        self._tell_watchers()

    def _tell_watchers(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def __mapping__(self) -> dict[str, Handler]:
        return {
            CHECK_PATH: Handler(self.Check, Cardinality.UNARY_UNARY, _Request, _Response),
            WATCH_PATH: Handler(self.Watch, Cardinality.UNARY_STREAM, _Request, _Response),
        }

    def _status(self, service: str) -> int:
        return _SERVING if self._is_serving and service not in self._down else _NOT_SERVING

    async def Check(self, stream: HealthStream) -> None:
        """The status of one name, now."""
        request = await stream.recv_message()
        service = request.service if request is not None else ""
        if service not in self.names:
            known = ", ".join(sorted(name for name in self.names if name))
            which = f", or one of {known}" if self._lists_names else ", or a model's name"
            unknown = UnknownNameError(
                f"no health status for {service!r}: ask for '' (the server){which}."
            )
            raise GRPCError(*to_status(unknown, "", service="health check"))
        await stream.send_message(_Response(status=self._status(service)))

    async def Watch(self, stream: HealthStream) -> None:
        """The status of one name now, then each change, until the caller leaves."""
        request = await stream.recv_message()
        service = request.service if request is not None else ""
        if service not in self.names:
            await stream.send_message(_Response(status=_SERVICE_UNKNOWN))
            await asyncio.Event().wait()  # the protocol keeps the call open; the caller ends it
        sent = None
        while True:
            changed = self._changed
            status = self._status(service)
            if status != sent:  # another name's change is no news to this caller
                await stream.send_message(_Response(status=status))
                sent = status
            await changed.wait()
