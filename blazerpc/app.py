"""BlazeApp: the registry of models and the @app.model decorator."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from starlette.applications import Starlette

from blazerpc.config import ServerConfig
from blazerpc.errors import DefinitionError
from blazerpc.openai.mapping import Kind, check_model
from blazerpc.runtime.hooks import (
    AuthHook,
    CallHooks,
    Middleware,
    check_auth_hook,
    check_middleware,
)
from blazerpc.runtime.lifespan import LifespanHook, check_hook
from blazerpc.schema.lockfile import lock_path_for, number_fields, read_lock
from blazerpc.schema.markers import Batching, Continuous, Placement
from blazerpc.schema.naming import is_package_name, is_wire_identifier
from blazerpc.schema.signature import read_model
from blazerpc.schema.spec import ModelSpec, ServiceSpec
from blazerpc.server import BlazeServer

__all__ = ("BlazeApp", "Registry")

F = TypeVar("F", bound=Callable[..., object])
H = TypeVar("H", bound=LifespanHook)
A = TypeVar("A", bound=AuthHook)
M = TypeVar("M", bound=Middleware)


class BlazeApp:
    """A registry of model functions, served as one gRPC service.

    The proto package is `blazerpc` and the service `InferenceService` unless given.
    """

    def __init__(
        self,
        *,
        package: str = "blazerpc",
        service: str = "InferenceService",
        lock: str | Path | None = None,
    ) -> None:
        if not is_package_name(package):
            raise DefinitionError(
                f"BlazeApp(package={package!r}): a proto package is lower-case ASCII words "
                "joined by dots. Use a name such as 'blazerpc' or 'acme.vision'."
            )
        if not is_wire_identifier(service):
            raise DefinitionError(
                f"BlazeApp(service={service!r}): a service name is an ASCII identifier. "
                "Use a name such as 'InferenceService'."
            )
        self._schema = ServiceSpec.build(package, service, ())
        self._numbered: ServiceSpec | None = None
        self._registry = Registry(self)
        defined_in = sys._getframe(1).f_globals.get("__file__")
        self.lock_path = Path(lock) if lock is not None else lock_path_for(defined_in)
        """Where the field-number lock lives: next to the module that made the app, by default."""
        self._lifespan_hooks: list[LifespanHook] = []
        self._auth_hooks: list[AuthHook] = []
        self._middleware: list[Middleware] = []

    def model(
        self,
        name: str,
        *,
        streaming: bool | None = None,
        batch: Batching | Continuous | None = None,
        version: str = "1",
        max_concurrent: int | None = None,
        openai: str | None = None,
        placement: Placement | None = None,
    ) -> Callable[[F], F]:
        """Register a function as model `name`; the function itself is returned unchanged.

        The shape (unary, server, client or bidirectional streaming) is read from the
        signature; `streaming` only states what the signature must agree with. With `batch=`,
        the function takes lists and is called once for a group of concurrent calls.
        `version` is what the Open Inference Protocol and `GET /models` call it.
        `max_concurrent` bounds how many calls of the model run at once; the others wait.
        `openai` ("chat", "completions", "embeddings") serves it on that OpenAI route too
        (docs/openai.md): its parameters take the request's fields of the same names.
        `placement` sets its replicas and resources when scaled out on Ray (docs/scale-out.md).
        """

        def register(function: F) -> F:
            caller_locals = sys._getframe(1).f_locals
            spec = read_model(
                name,
                function,
                streaming=streaming,
                batching=batch,
                localns=caller_locals,
                version=version,
                max_concurrent=max_concurrent,
                openai=openai,
                placement=placement,
            )
            if spec.openai is not None:
                check_model(spec, Kind(spec.openai))
            self._add(spec)
            return function

        return register

    def lifespan(self, hook: H) -> H:
        """Register a generator function run once per server process: load, `yield`, release.

        The server reports NOT_SERVING until every hook has reached its `yield`, and runs the
        rest of each hook after its last call has ended. See docs/deployment.md.
        """
        check_hook(hook)
        self._lifespan_hooks.append(hook)
        return hook

    def auth(self, hook: A) -> A:
        """Register a function that decides whether a call may run: return, or raise ModelError.

        It gets the `Call` (model, metadata, peer, request id) before the model runs, on every
        transport, after any API key was checked. See docs/security.md.
        """
        check_auth_hook(hook)
        self._auth_hooks.append(hook)
        return hook

    def middleware(self, hook: M) -> M:
        """Register a generator function that wraps every call: before its `yield`, the call.

        Past the `yield`, the `Call` has its status and duration. The first registered is the
        outermost; all run outside the auth hooks. See docs/security.md.
        """
        check_middleware(hook)
        self._middleware.append(hook)
        return hook

    @property
    def call_hooks(self) -> CallHooks:
        """The auth hooks and middleware, in the order they were registered."""
        return CallHooks(tuple(self._auth_hooks), tuple(self._middleware))

    @property
    def lifespan_hooks(self) -> tuple[LifespanHook, ...]:
        """The lifespan hooks, in the order they start."""
        return tuple(self._lifespan_hooks)

    @property
    def registry(self) -> Registry:
        """A read-only mapping from model name to its spec, in registration order."""
        return self._registry

    @property
    def schema(self) -> ServiceSpec:
        """The whole service schema: the source of the .proto, the descriptor and the codec.

        Field numbers come from the lock file when there is one (see schema/lockfile.py), so the
        server, the codec and `blaze proto` always agree with what callers compiled against.
        """
        if self._numbered is None:
            self._numbered = number_fields(self._schema, read_lock(self.lock_path))
        return self._numbered

    def asgi(self, config: ServerConfig | None = None) -> Starlette:
        """The HTTP gateway alone, as an ASGI app to mount in a server of your own.

        Its lifespan runs the app's lifespan hooks, then serves; at shutdown it drains the
        running calls (config.grace), as BlazeServer does. Limits come from `config`; its gRPC
        and HTTP ports are not used.
        """
        return BlazeServer(self, config).asgi()

    def _add(self, spec: ModelSpec) -> None:
        for existing in self._schema.models:
            if existing.name == spec.name or existing.rpc_name == spec.rpc_name:
                raise DefinitionError(
                    f"model {spec.name!r} ({spec.location}): the name is taken by model "
                    f"{existing.name!r} ({existing.location}), which also becomes rpc "
                    f"{existing.rpc_name}. Give each model a distinct name."
                )
        schema = ServiceSpec.build(
            self._schema.package, self._schema.name, (*self._schema.models, spec)
        )
        number_fields(schema, None)  # two fields pinned to one number fail here, at import
        self._schema = schema
        self._numbered = None


class Registry(Mapping[str, ModelSpec]):
    """A read-only view of an app's models; `schema` is the service they make up."""

    __slots__ = ("_app",)

    def __init__(self, app: BlazeApp) -> None:
        self._app = app

    @property
    def schema(self) -> ServiceSpec:
        """The service the registered models make up."""
        return self._app.schema

    def __getitem__(self, name: str) -> ModelSpec:
        return self._app.schema.model(name)

    def __iter__(self) -> Iterator[str]:
        return iter([model.name for model in self._app.schema.models])

    def __len__(self) -> int:
        return len(self._app.schema.models)

    def __repr__(self) -> str:
        return f"Registry({list(self)!r})"
