"""OpenTelemetry tracing as middleware: a span per call, named after the model.

```python
from blazerpc.tracing import opentelemetry_middleware

app.middleware(opentelemetry_middleware())
```

Needs `pip install 'blazerpc[otel]'` (the OpenTelemetry API) and, to export spans, an SDK
configured by the application as usual. The span continues the caller's trace when the call
carries W3C `traceparent` metadata (gRPC) or header (HTTP), is the current span while the
model runs (a sync model in its worker thread too), and ends with the call's status.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from blazerpc.context import Call
from blazerpc.errors import BlazeError, Status

__all__ = ("TracingUnavailableError", "opentelemetry_middleware")


class TracingUnavailableError(BlazeError):
    """Tracing was asked for, but the OpenTelemetry API is not installed."""


def opentelemetry_middleware(tracer_provider: Any = None) -> Any:
    """Middleware that traces every call; `tracer_provider` defaults to the global one."""
    try:
        trace = importlib.import_module("opentelemetry.trace")
        propagate = importlib.import_module("opentelemetry.propagate")
    except ImportError:
        raise TracingUnavailableError(
            "opentelemetry_middleware needs the OpenTelemetry API: pip install 'blazerpc[otel]'."
        ) from None
    from blazerpc import __version__

    tracer = trace.get_tracer("blazerpc", __version__, tracer_provider)
    server = trace.SpanKind.SERVER

    def opentelemetry(call: Call) -> Iterator[None]:
        parent = propagate.extract(call.metadata)
        attributes = {
            "rpc.system": "grpc" if call.transport in ("grpc", "oip") else "http",
            "rpc.method": call.model,
            "blazerpc.model": call.model,
            "blazerpc.shape": call.shape,
            "blazerpc.transport": call.transport,
            "blazerpc.request_id": call.request_id,
        }
        with tracer.start_as_current_span(
            call.model,
            context=parent,
            kind=server,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield
            span.set_attribute("rpc.grpc.status_code", call.status.value)
            if call.status is not Status.OK:
                span.set_status(trace.Status(trace.StatusCode.ERROR, call.message))
                if isinstance(call.error, Exception):
                    span.record_exception(call.error)

    return opentelemetry
