"""Prometheus metrics per model and status, served on `--metrics-port` (extra: blazerpc[metrics]).

prometheus_client is imported only when metrics are on. Each server has its own registry, so
two servers in one process never clash. With `--workers N`, every worker records into
prometheus_client's multiprocess directory and the parent serves the sum on one port.
"""

from __future__ import annotations

import bisect
import importlib
import json
import logging
import os
import socket
import socketserver
import ssl
import threading
import time
import wsgiref.simple_server
from collections.abc import Callable
from typing import Any

from blazerpc.config import ServerConfig
from blazerpc.errors import BlazeError, Status, UnauthenticatedError
from blazerpc.security.keys import ApiKeys
from blazerpc.security.tls import ServerTls

__all__ = (
    "Metrics",
    "MetricsUnavailableError",
    "StreamTimer",
    "scrape_guard",
    "serve_multiprocess_metrics",
)

log = logging.getLogger(__name__)

_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
_GAP_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_FLUSH_EVERY = 256
Stopper = Callable[[], None]


class MetricsUnavailableError(BlazeError):
    """Metrics were asked for, but prometheus-client is not installed."""


def _prometheus() -> Any:
    try:
        return importlib.import_module("prometheus_client")
    except ImportError:
        raise MetricsUnavailableError(
            "--metrics-port needs prometheus-client: pip install 'blazerpc[metrics]'."
        ) from None


class Metrics:
    """The server's instruments; the call boundary and the batcher feed them."""

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        if multiprocess_dir is not None:  # read by prometheus_client when first imported
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
        prometheus = _prometheus()
        # a worker's values go to the multiprocess files only, summed by the parent;
        # a lone server keeps a registry of its own
        self.registry = None if multiprocess_dir else prometheus.CollectorRegistry()
        registry = self.registry
        histogram, counter = prometheus.Histogram, prometheus.Counter
        self._requests = counter(
            "blazerpc_requests",
            "Model calls finished, by model, shape and gRPC status.",
            ["model", "shape", "status"],
            registry=registry,
        )
        self._duration = histogram(
            "blazerpc_request_duration_seconds",
            "Time from a call's arrival to its status, by model and status.",
            ["model", "status"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._first_item = histogram(
            "blazerpc_stream_first_item_seconds",
            "Time from a stream's arrival to its first item sent (time to first token).",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._item_gap = histogram(
            "blazerpc_stream_item_gap_seconds",
            "Time between consecutive items sent on a stream.",
            ["model"],
            buckets=_GAP_BUCKETS_S,
            registry=registry,
        )
        self._batch_size = histogram(
            "blazerpc_batch_size",
            "Calls per batch function call.",
            ["model"],
            buckets=_BATCH_SIZES,
            registry=registry,
        )
        self._queue_time = histogram(
            "blazerpc_batch_queue_seconds",
            "Time a batched call waited, from arrival to the start of its batch.",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._step = histogram(
            "blazerpc_step_seconds",
            "Duration of one step of a continuously batched model.",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._step_streams = histogram(
            "blazerpc_step_streams",
            "Streams active in one step of a continuously batched model.",
            ["model"],
            buckets=_BATCH_SIZES,
            registry=registry,
        )
        self._slot_wait = histogram(
            "blazerpc_slot_wait_seconds",
            "Time a stream waited for a slot in a continuous batch: arrival to its first step.",
            ["model"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._children: dict[tuple[object, ...], Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def call_ended(self, model: str, shape: str, status: Status, duration_s: float) -> None:
        """One finished call: counted, and its duration observed."""
        self._child(self._requests, model, shape, status.name).inc()
        self._child(self._duration, model, status.name).observe(duration_s)

    def stream_timer(self, model: str, started: float) -> StreamTimer:
        """A timer for one stream of `model` that arrived at `started` (perf_counter)."""
        return StreamTimer(
            self._child(self._first_item, model), self._child(self._item_gap, model), started
        )

    def batch_started(self, model: str, size: int, waits_s: list[float]) -> None:
        """A batch of `size` calls started; each waited its entry of `waits_s`."""
        self._child(self._batch_size, model).observe(size)
        queue_time = self._child(self._queue_time, model)
        for waited in waits_s:
            queue_time.observe(waited)

    def step_ran(self, model: str, streams: int, duration_s: float, waits_s: list[float]) -> None:
        """A continuous step over `streams` streams took `duration_s`; the streams that joined
        for it waited their entry of `waits_s` for a slot."""
        self._child(self._step, model).observe(duration_s)
        self._child(self._step_streams, model).observe(streams)
        slot_wait = self._child(self._slot_wait, model)
        for waited in waits_s:
            slot_wait.observe(waited)

    def serve(
        self,
        host: str,
        port: int,
        *,
        keys: ApiKeys | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> int:
        """Serve /metrics over HTTP in a thread; the bound port (0 picks a free one).

        With `keys`, a scrape needs `authorization: Bearer <key>`; with `tls`, HTTPS.
        """
        self._server, self._thread = _serve_http(host, port, self.registry, keys, tls)
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving /metrics."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None

    def _child(self, metric: Any, *labels: str) -> Any:
        """The labelled child, cached: prometheus' labels() costs more than an observe()."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


class StreamTimer:
    """Times one stream's items: time to first item, then the gaps between items.

    Gaps are counted into the histogram's buckets locally and added in bulk every
    `_FLUSH_EVERY` items and at the end: a prometheus observe() per token took a lock twice
    and cost the stream 20 % more server CPU (bench/metrics.py); this costs under 2 %.
    """

    __slots__ = ("_bounds", "_counts", "_first", "_gap", "_last", "_pending", "_sum")

    def __init__(self, first: Any, gap: Any, started: float) -> None:
        self._first = first
        self._gap = gap
        self._bounds: list[float] = list(gap._upper_bounds)  # the last bound is +Inf
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._pending = 0
        self._last = started

    def item_sent(self) -> None:
        """One item went out now."""
        now = time.perf_counter()
        since = now - self._last
        self._last = now
        if self._first is not None:
            self._first.observe(since)
            self._first = None
            return
        self._counts[bisect.bisect_left(self._bounds, since)] += 1
        self._sum += since
        self._pending += 1
        if self._pending >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Add the gaps counted so far to the histogram."""
        if not self._pending:
            return
        for index, count in enumerate(self._counts):
            if count:
                self._gap._buckets[index].inc(count)
                self._counts[index] = 0
        self._gap._sum.inc(self._sum)
        self._sum = 0.0
        self._pending = 0


def serve_multiprocess_metrics(
    host: str,
    port: int,
    directory: str,
    *,
    keys: ApiKeys | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, Stopper, Callable[[int], None]]:
    """For the parent of `--workers N`: serve the sum of the workers' metrics on one port.

    The workers record with `Metrics(multiprocess_dir=directory)`. Returns the bound port, a
    stopper, and the hook that forgets a dead worker's files.
    """
    prometheus = _prometheus()
    multiprocess = importlib.import_module("prometheus_client.multiprocess")
    registry = prometheus.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    server, _ = _serve_http(host, port, registry, keys, tls)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    def forget(pid: int) -> None:
        multiprocess.mark_process_dead(pid, path=directory)

    return int(server.server_port), stop, forget


def scrape_guard(
    config: ServerConfig, keys: ApiKeys | None
) -> tuple[ApiKeys | None, ssl.SSLContext | None]:
    """What a scrape of /metrics needs: the server's `keys` (unless public_metrics) and TLS."""
    keys = None if config.public_metrics else keys
    tls = ServerTls.of(config)
    return keys, None if tls is None else tls.context(alpn=["http/1.1"])


def _serve_http(
    host: str, port: int, registry: Any, keys: ApiKeys | None, tls: ssl.SSLContext | None
) -> tuple[Any, threading.Thread]:
    """prometheus_client's WSGI app on a threaded server, behind the key check and TLS."""
    app = _prometheus().make_wsgi_app(registry)
    if keys is not None:
        app = _keyed(app, keys)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("_Server", (_ThreadingServer,), {"address_family": family})
    server: Any = wsgiref.simple_server.make_server(
        host, port, app, server_class=server_class, handler_class=_QuietHandler
    )
    if tls is not None:  # the handshake runs in the request's thread, not the accepting one
        server.socket = tls.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    thread = threading.Thread(target=server.serve_forever, name="blazerpc.metrics", daemon=True)
    thread.start()
    return server, thread


def _keyed(app: Any, keys: ApiKeys) -> Any:
    def keyed(environ: dict[str, Any], start_response: Any) -> Any:
        given = environ.get("HTTP_AUTHORIZATION")  # WSGI joins repeated headers with commas
        try:
            keys.check([] if given is None else [given])
        except UnauthenticatedError as error:
            body = json.dumps({"code": "UNAUTHENTICATED", "message": str(error)}).encode()
            headers = [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")]
            start_response("401 Unauthorized", headers)
            return [body]
        return app(environ, start_response)

    return keyed


class _ThreadingServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that fails TLS or hangs up is its problem: a debug line, no traceback."""
        log.debug("metrics request from %s failed", client_address, exc_info=True)


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    timeout = 10  # seconds a connection may stall (TLS handshake included) before it is closed

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one every few seconds would drown the server's own lines."""
