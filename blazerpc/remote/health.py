"""One gRPC health check of a running server: what `blaze health` asks and prints.

For a container's HEALTHCHECK and a Kubernetes exec probe, where a slim image has neither
curl nor grpcio (and the kubelet's own gRPC probe cannot speak TLS). It asks the standard
`grpc.health.v1.Health/Check` over grpclib, as any client would.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

import h2.exceptions
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError

from blazerpc.grpc.health import CHECK_PATH
from blazerpc.grpc.protocols import HEALTH

__all__ = ("HealthAnswer", "check_health")

_Request = HEALTH.classes["HealthCheckRequest"]
_Response = HEALTH.classes["HealthCheckResponse"]
_STATUS_NAMES = _Response.DESCRIPTOR.enum_types_by_name["ServingStatus"].values_by_number


@dataclass(frozen=True, slots=True)
class HealthAnswer:
    """What the server said, as one line, and whether it is SERVING."""

    line: str
    is_serving: bool


async def check_health(
    host: str,
    port: int,
    *,
    model: str = "",
    timeout: float = 5.0,
    tls: ssl.SSLContext | None = None,
) -> HealthAnswer:
    """Ask the server at host:port for the health of `model` ("": the whole server)."""
    what = f"{host}:{port}" + (f" model {model}" if model else "")
    channel = Channel(host, port, ssl=tls)
    try:
        async with asyncio.timeout(timeout):
            async with channel.request(
                CHECK_PATH, Cardinality.UNARY_UNARY, _Request, _Response, timeout=timeout
            ) as stream:
                await stream.send_message(_Request(service=model), end=True)
                reply = await stream.recv_message()
                await stream.recv_trailing_metadata()
    except GRPCError as error:
        return HealthAnswer(f"{what}: {error.status.name}: {error.message}", False)
    except TimeoutError:
        return HealthAnswer(f"{what}: no answer within {timeout:g} s", False)
    except OSError as error:  # refused, reset, no route: the server is not there
        return HealthAnswer(f"{what}: unreachable: {error.strerror or error}", False)
    except (StreamTerminatedError, h2.exceptions.ProtocolError) as error:  # not gRPC, or TLS
        return HealthAnswer(f"{what}: unreachable: {error}", False)
    finally:
        channel.close()
    number: int = getattr(reply, "status", 0)
    status = _STATUS_NAMES[number].name if number in _STATUS_NAMES else str(number)
    return HealthAnswer(f"{what}: {status}", status == "SERVING")
