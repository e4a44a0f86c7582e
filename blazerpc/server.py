"""BlazeServer: builds the stack for one app from the layers below, and owns its lifecycle.

A grpclib server on a socket it binds itself (so `.port` is real), the HTTP gateway when asked,
and the protocol layers mounted on both. Its life: LOADING (health NOT_SERVING, lifespan hooks
running), SERVING, DRAINING (see drain()). `asgi()` runs the same life inside someone else's
ASGI server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette

from blazerpc.config import ServerConfig
from blazerpc.grpc.h2 import EdgeOptions, GrpcServer, IServable
from blazerpc.grpc.health import CHECK_PATH, HealthService
from blazerpc.grpc.keys import require_keys
from blazerpc.grpc.messages import inflating
from blazerpc.grpc.protocols import Protocol as GrpcProtocol
from blazerpc.grpc.reflection import with_reflection
from blazerpc.grpc.service import RawBytesCodec, ServiceHandlers
from blazerpc.http.edge import bounded_http_protocol
from blazerpc.http.gateway import Gateway
from blazerpc.openai.routes import openai_routes
from blazerpc.openinference.grpc import InferenceProtocol
from blazerpc.openinference.protos import INFERENCE
from blazerpc.openinference.rest import PROBE_PATHS, open_inference_routes
from blazerpc.openinference.tensors import tensors_by_model
from blazerpc.runtime.accesslog import AccessLog
from blazerpc.runtime.admission import Admission, Phase
from blazerpc.runtime.batcher import BatchStats
from blazerpc.runtime.boundary import Limits, RunnerFactory, local_runner, model_calls
from blazerpc.runtime.hooks import CallHooks
from blazerpc.runtime.lifespan import LifespanHook, run_hooks
from blazerpc.runtime.metrics import Metrics, scrape_guard
from blazerpc.schema.spec import ServiceSpec
from blazerpc.security.keys import ApiKeys
from blazerpc.security.tls import ServerTls
from blazerpc.wire.json import codecs_of
from blazerpc.wire.protobuf import SchemaCodec

__all__ = ("BlazeServer", "Servable", "bind_tcp")

log = logging.getLogger(__name__)


class Servable(Protocol):
    """What a server needs of an app (BlazeApp is one): its schema and its hooks."""

    @property
    def schema(self) -> ServiceSpec:
        """The service the app's models make up."""
        ...

    @property
    def lifespan_hooks(self) -> tuple[LifespanHook, ...]:
        """The hooks to run once per process, in the order they start."""
        ...

    @property
    def call_hooks(self) -> CallHooks:
        """The auth hooks and middleware to run around every call."""
        ...


class BlazeServer:
    """Serves an app's models over gRPC: `async with BlazeServer(app, port=0) as server: ...`.

    Options are ServerConfig's: pass `config=`, or its fields as keywords. The wire classes
    are built once, here, from the app's schema. Besides the models it serves health
    (grpc.health.v1) and, unless `reflection=False`, server reflection. `runner` runs the
    admitted calls (default: here; blazerpc.ray sends them to Ray replicas).
    """

    def __init__(
        self,
        app: Servable,
        config: ServerConfig | None = None,
        *,
        metrics: Metrics | None = None,
        shares_port: bool = False,
        runner: RunnerFactory = local_runner,
        **options: Any,
    ) -> None:
        config = config or ServerConfig()
        self.config = config.replace(**options) if options else config
        self.app = app
        self._reuse_port = shares_port or self.config.workers > 1
        """Other processes serve the same ports (--workers, or --reload's next version)."""
        schema = app.schema
        self._admission = Admission(self.config.max_streams)
        # given metrics are served by someone else (a workers' parent); else we serve our own
        self._serves_metrics = metrics is None and self.config.metrics_port is not None
        self.metrics = Metrics() if self._serves_metrics else metrics
        self._metrics_port: int | None = None
        self._access = AccessLog()
        self._tensors = tensors_by_model(schema) if self.config.open_inference else {}
        self._calls = model_calls(
            schema,
            self._admission,
            self.metrics,
            self._access,
            redacts_errors=self.config.error_detail == "redacted",
            hooks=app.call_hooks,
            runner=runner,
        )
        self._batchers = {
            name: call.batcher for name, call in self._calls.items() if call.batcher is not None
        }
        self._limits = Limits.of(self.config)
        compression = self.config.response_compression
        handlers = ServiceHandlers(
            schema, SchemaCodec(schema), self._limits, self._calls, compression=compression
        )
        self._keys = ApiKeys.of(self.config)
        lists_names = self._keys is None  # probes answer anyone: with keys, they name nothing
        self.health = HealthService(
            [schema.full_name, *(model.name for model in schema.models)], lists_names=lists_names
        )
        services: list[IServable] = [handlers, self.health]
        protocols: list[GrpcProtocol] = []
        open_paths = set(self.health.__mapping__())  # probes never need a key
        if self.config.open_inference:
            inference = InferenceProtocol(
                self._tensors,
                self._calls,
                self._admission,
                self._limits,
                lists_names=lists_names,
                compression=compression,
                stream_shape=self.config.open_inference_stream,
            )
            services.append(inference)
            protocols.append(INFERENCE)
            open_paths.update(inference.probe_paths)
        self._services = services
        if self.config.reflection:
            self._services = with_reflection(schema, services, protocols)
            if self.config.public_reflection:
                for reflection in self._services[len(services) :]:
                    open_paths.update(reflection.__mapping__())
        # the models' own handlers read compressed requests themselves; the others through this
        self._services = [handlers, *inflating(self._services[1:], self._limits)]
        if self._keys is not None:
            self._services = require_keys(self._services, self._keys, open_paths)
        self._server: GrpcServer | None = None
        self._socket: socket.socket | None = None
        self._http: _HttpServer | None = None
        self._lifespan = contextlib.AsyncExitStack()
        self._drain_started = asyncio.Event()
        self._drained: asyncio.Future[None] | None = None

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self.config.host

    @property
    def batch_stats(self) -> Mapping[str, BatchStats]:
        """Per batched model: batches run, items, queue depth, sizes, queue time."""
        return {name: batcher.stats for name, batcher in self._batchers.items()}

    @property
    def port(self) -> int:
        """The bound port: the real one when the server was created with port 0."""
        if self._socket is None:
            raise RuntimeError("BlazeServer.port is known once start() has run.")
        return int(self._socket.getsockname()[1])

    @property
    def http_port(self) -> int:
        """The port of the HTTP gateway: the real one when http_port was 0."""
        if self._http is None:
            raise RuntimeError(
                "BlazeServer.http_port is known once start() has run with http_port set."
            )
        return self._http.port

    @property
    def metrics_port(self) -> int:
        """The port serving /metrics: the real one when metrics_port was 0."""
        if self._metrics_port is None:
            raise RuntimeError(
                "BlazeServer.metrics_port is known once start() has run with metrics_port set."
            )
        return self._metrics_port

    @property
    def running_calls(self) -> int:
        """Model calls admitted and not yet finished."""
        return self._admission.running

    @property
    def phase(self) -> Phase:
        """LOADING until the lifespan hooks are ready, SERVING, then DRAINING."""
        return self._admission.phase

    def set_model_ready(self, name: str, ready: bool, reason: str = "") -> None:
        """Serve or refuse one model's calls, and say so in its health and readiness checks:
        for models whose replicas run elsewhere (blazerpc.ray). `reason` is what a refused
        call's UNAVAILABLE says."""
        self.app.schema.model(name)  # KeyError for a name the app does not serve
        self._admission.set_model_ready(name, ready, reason)
        self.health.set_model_serving(name, ready)

    async def start(self) -> None:
        """Bind, answer health checks (NOT_SERVING), run the lifespan hooks, then serve.

        A failing hook closes the server and raises LifespanError.
        """
        self._start_afresh()
        # grpclib's Server binds to the running loop when created, so create it here
        tls = ServerTls.of(self.config)
        grpc_tls = tls.context(alpn=["h2"]) if tls is not None else None  # bad files fail first
        self._server = GrpcServer(
            self._services,
            codec=RawBytesCodec(),
            options=EdgeOptions.of(self.config),
            uncounted_paths=[CHECK_PATH],  # a liveness probe answers even at max_calls
        )
        self._socket = bind_tcp(self.host, self.config.port, reuse_port=self._reuse_port)
        await self._server.start(sock=self._socket, ssl=grpc_tls)
        try:
            if self.config.http_port is not None:
                self._http = await _HttpServer.start(
                    self._gateway(), self.host, self.config, reuse_port=self._reuse_port
                )
            await self._load()
        except BaseException:
            await self.close()
            raise

    def _start_afresh(self) -> None:
        """After an earlier life ended (drained), a new one: otherwise drain() would return at
        once, the earlier drain being done, and leave this one running."""
        if self._drained is not None:
            self._drained, self._drain_started = None, asyncio.Event()
            self._lifespan = contextlib.AsyncExitStack()
            self._admission.phase = Phase.LOADING

    async def _load(self) -> None:
        """Serve /metrics if asked, run the lifespan hooks to their `yield`, then serve calls."""
        if self._serves_metrics and self.metrics is not None:
            keys, tls = scrape_guard(self.config, self._keys)
            port = self.config.metrics_port or 0
            self._metrics_port = self.metrics.serve(self.host, port, keys=keys, tls=tls)
        hooks = self.app.lifespan_hooks
        if hooks:  # loading weights can take minutes: say so, then how long it took
            log.info("running %d lifespan hook%s", len(hooks), "" if len(hooks) == 1 else "s")
            started = time.perf_counter()
        await self._lifespan.enter_async_context(run_hooks(hooks))
        if hooks:
            log.info("lifespan hooks ready in %.1f s", time.perf_counter() - started)
        self._admission.phase = Phase.SERVING
        self.health.set_serving(True)
        log.info("serving %d models", len(self.app.schema.models))

    def asgi(self) -> Starlette:
        """The HTTP gateway alone, as an ASGI app whose lifespan is this server's life.

        At the ASGI server's startup it serves /metrics (if metrics_port is set) and runs the
        lifespan hooks; at shutdown it drains (config.grace). The gRPC and HTTP ports are not
        bound: the ASGI server that runs the app owns its socket.
        """
        return self._gateway(lifespan=self._asgi_lifespan).asgi

    @contextlib.asynccontextmanager
    async def _asgi_lifespan(self, _: Starlette) -> AsyncIterator[None]:
        if self._server is not None or self._http is not None:
            raise RuntimeError(
                "BlazeServer.asgi() is the HTTP gateway alone, and this server already serves "
                "(start() ran). Use its http_port, or app.asgi() for a gateway of its own."
            )
        self._start_afresh()
        try:
            await self._load()
        except BaseException:
            await self.close()
            raise
        try:
            yield
        finally:
            await self.drain()

    def _gateway(
        self,
        lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]] | None = None,
    ) -> Gateway:
        schema, config, limits = self.app.schema, self.config, self._limits
        codecs = codecs_of(schema)
        routes = (
            open_inference_routes(
                self._tensors,
                self._calls,
                codecs,
                self._admission,
                limits,
                config.sse_keepalive,
                lists_names=self._keys is None,
            )
            if config.open_inference
            else []
        )
        routes += openai_routes(self._calls, codecs, limits, config.sse_keepalive)
        return Gateway(
            schema,
            self._calls,
            codecs,
            limits,
            self._admission,
            keepalive_s=config.sse_keepalive,
            routes=routes,
            cors_origins=config.cors_origin_list,
            keys=self._keys,
            probe_paths=PROBE_PATHS if config.open_inference else (),
            lifespan=lifespan,
        )

    async def serve(self) -> None:
        """Start if needed, then serve until drain() or close() has finished."""
        if self._server is None:
            await self.start()
        await self._wait_drained()

    async def drain(self, grace: float | None = None) -> None:
        """Shut down without dropping work: refuse new calls, finish the running ones.

        Health turns NOT_SERVING and the port stops accepting connections; new calls on open
        connections get UNAVAILABLE. Calls get `grace` seconds (default: config.grace) to
        finish; those still running are then ended with UNAVAILABLE, their generators closed.
        Then the lifespan hooks release what they loaded.
        """
        if self._drained is not None:
            await self._wait_drained()
            return
        self._drained = asyncio.get_running_loop().create_future()
        self._drain_started.set()
        try:
            await self._shut_down(self.config.grace if grace is None else grace)
        finally:
            self._drained.set_result(None)

    async def close(self) -> None:
        """Stop at once: drain with no grace period."""
        await self.drain(0)

    async def _shut_down(self, grace: float) -> None:
        try:
            await self._stop_serving(grace)
        finally:  # a hook failing at teardown still lets the metrics and access log close
            if self._serves_metrics and self.metrics is not None:
                self.metrics.close()
            self._access.close()  # every call has ended: write the last lines

    async def _stop_serving(self, grace: float) -> None:
        self.health.set_serving(False)
        await asyncio.sleep(0)  # open Watch calls send NOT_SERVING before connections close
        if self._server is not None:
            self._server.stop_listening()
            self._server.go_away()  # clients move new calls to another server (or reload)
        if self._http is not None:
            self._http.stop_listening()
        grpc_server = self._server
        ended = await self._admission.drain(
            grace, settled=grpc_server.has_handed_over if grpc_server is not None else None
        )
        if ended:
            log.warning("ended %d calls still running after the %.1f s grace period", ended, grace)
        for batcher in self._batchers.values():
            await batcher.close()  # let running batches finish
        if self._server is not None:
            self._server.close()
            self._server.close_connections()  # before waiting: Python 3.12+ waits for them
            await self._server.wait_closed()
        if self._http is not None:
            await self._http.close()
        await self._lifespan.aclose()

    async def _wait_drained(self) -> None:
        await self._drain_started.wait()
        if self._drained is not None:
            await asyncio.shield(self._drained)

    async def __aenter__(self) -> BlazeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class _HttpServer:
    """uvicorn serving the gateway on a socket we bound, inside our event loop.

    Driven step by step (startup, shutdown) rather than through uvicorn's serve(), which
    would take over the process's signals: shutting down is BlazeServer's job.
    """

    def __init__(self, server: uvicorn.Server, sock: socket.socket) -> None:
        self._server = server
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        self._ticks = asyncio.ensure_future(server.main_loop())  # keeps the Date header fresh

    @classmethod
    async def start(
        cls, gateway: Gateway, host: str, config: ServerConfig, *, reuse_port: bool
    ) -> _HttpServer:
        port = config.http_port or 0
        try:
            sock = bind_tcp(host, port, reuse_port=reuse_port)
        except OSError as err:
            err.filename = f"{host}:{port} (HTTP)"  # which of the server's ports was refused
            raise
        tls = ServerTls.of(config)
        uvicorn_config = uvicorn.Config(
            gateway.asgi,
            ssl_certfile=tls.cert if tls else None,  # uvicorn's scope says https
            ssl_keyfile=tls.key if tls else None,
            lifespan="off",  # the app's lifespan hooks run once, for gRPC and HTTP alike
            log_config=None,  # the library never configures logging
            access_log=False,  # blazerpc.access logs every call, whatever the transport
            server_header=False,
            http=bounded_http_protocol(config.max_header_bytes, config.header_timeout),
            timeout_graceful_shutdown=1,  # the calls were drained before uvicorn stops
        )
        uvicorn_config.load()
        if tls is not None:  # ours: the same checks, errors and client verification as gRPC
            uvicorn_config.ssl = tls.context(alpn=["http/1.1"])
        server = uvicorn.Server(uvicorn_config)
        server.lifespan = uvicorn_config.lifespan_class(uvicorn_config)
        await server.startup(sockets=[sock])
        return cls(server, sock)

    def stop_listening(self) -> None:
        """Accept no new connections; the open ones carry on."""
        for listener in self._server.servers:
            listener.close()

    async def close(self) -> None:
        """Close idle connections, wait briefly for busy ones, then stop."""
        self._server.should_exit = True
        await self._ticks
        await self._server.shutdown(sockets=[self._socket])


def bind_tcp(host: str, port: int, *, reuse_port: bool, listen: bool = True) -> socket.socket:
    """A bound TCP socket; proto IPPROTO_TCP so asyncio sets TCP_NODELAY on connections.

    Without it every small response waits ~40 ms for Nagle's algorithm and delayed ACKs.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # worker processes share the port; the kernel spreads connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    if listen:
        sock.listen(1024)
        sock.setblocking(False)
    return sock
