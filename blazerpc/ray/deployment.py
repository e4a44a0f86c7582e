"""RayDeployment: an app's models as Ray Serve applications, and blazerpc's server in front.

Each model is one Serve application (`{package}.{Service}.{model}`) of `ModelReplica`s, with
its own replicas or autoscaling bounds and resources (`Placement`: in code, overridden here).
The front door is a `BlazeServer` whose runner sends admitted calls through the deployment
handles (`RemoteModel`); its lifespan deploys the models, watches their replicas (per-model
health and readiness), and deletes what it deployed when it has drained.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import ray
from ray import serve
from ray.serve.schema import ApplicationStatusOverview

from blazerpc.config import ConfigError, ServerConfig
from blazerpc.errors import DefinitionError
from blazerpc.ray.inbox import StreamInbox
from blazerpc.ray.remote import RemoteModel, Route
from blazerpc.ray.replica import ModelReplica
from blazerpc.runtime.hooks import CallHooks
from blazerpc.runtime.lifespan import LifespanHook
from blazerpc.runtime.metrics import Metrics
from blazerpc.schema.markers import Batching, Continuous, Placement
from blazerpc.schema.spec import ModelSpec, ServiceSpec
from blazerpc.server import BlazeServer
from blazerpc.target import load_app

__all__ = ("DEFAULT_NUM_CPUS", "RayDeployment", "default_max_ongoing")

log = logging.getLogger(__name__)

DEFAULT_NUM_CPUS = 0.25
"""What one replica reserves unless told: a fraction, so an app of a few models with two
replicas each fits on a 2-CPU machine. CPU-heavy models should ask for more."""
_STREAMS_PER_REPLICA = 100
"""Calls one replica holds at once by default (Ray's default, 5, would cap a replica of a
token-streaming model at 5 streams); a batched model takes what its batcher accepts."""
_WATCH_S = 1.0
_DEPLOY_POLL_S = 0.25
_DELETE_WAIT_S = 30.0
"""Longer than Ray Serve's own graceful shutdown of a replica (20 s by default)."""
"""How often the replicas' states are read for health and readiness."""


class RayDeployment:
    """The models of the app `target` on the Ray cluster this process is connected to.

    `placement` applies to every model and `placements` to the one it names, on top of each
    model's `placement=` in code. `working_dir` is shipped to the cluster's nodes by Ray (for a
    remote cluster); otherwise replicas import the app from this machine's paths. `name`
    prefixes the Serve applications' names (default: the service's full name).
    """

    def __init__(
        self,
        target: str,
        *,
        placement: Placement | None = None,
        placements: Mapping[str, Placement] | None = None,
        working_dir: str | Path | None = None,
        name: str | None = None,
    ) -> None:
        self.app = load_app(target)
        self.schema: ServiceSpec = self.app.schema
        self.name = name or self.schema.full_name
        """What the models' Serve applications are named after: two deployments of one app
        with different names (a new version beside the old) do not touch each other."""
        served = [model.name for model in self.schema.models]
        for name in placements or {}:
            if name not in served:
                raise ConfigError(
                    f"placement for model {name!r}: the app serves no such model; "
                    f"it serves: {', '.join(served)}."
                )
        self._placements = {
            model.name: _placed(model, placement, (placements or {}).get(model.name))
            for model in self.schema.models
        }
        self._working_dir = str(working_dir) if working_dir is not None else None
        location, _, attribute = target.partition(":")
        if self._working_dir is None and location.endswith(".py"):  # replicas start elsewhere
            target = f"{Path(location).resolve()}:{attribute or 'app'}"
        self.target = target
        self._routes = {model.name: Route() for model in self.schema.models}
        self._inbox: Any = None
        self._server: BlazeServer | None = None
        self._deploys = True
        self._redacts = False

    def placement(self, model: str) -> Placement:
        """Model `model`'s placement: its code's, the overrides, then the defaults."""
        return self._placements[model]

    def application_name(self, model: str) -> str:
        """The Serve application that runs `model`: `blazerpc.InferenceService.generate`."""
        return f"{self.name}.{model}"

    def applications(self) -> dict[str, Any]:
        """Each model's Serve application (`Deployment.bind()`), for composing Ray apps of
        your own; `deploy()` runs these."""
        return {
            model.name: serve.deployment(ModelReplica)  # type: ignore[attr-defined]
            .options(**self._deployment_options(model))
            .bind(
                self.target,
                model.name,
                paths=() if self._working_dir else (os.getcwd(),),
            )
            for model in self.schema.models
        }

    def _deployment_options(self, model: ModelSpec) -> dict[str, Any]:
        placement = self._placements[model.name]
        actor: dict[str, Any] = {"num_cpus": placement.num_cpus, "num_gpus": placement.num_gpus}
        if self._working_dir is not None:
            actor["runtime_env"] = {"working_dir": self._working_dir}
        options: dict[str, Any] = {
            "name": model.name,
            "max_ongoing_requests": placement.max_ongoing_requests,
            "ray_actor_options": actor,
            "logging_config": {"enable_access_log": False},  # the front door logs every call
        }
        if placement.autoscales:
            bounds = {
                "min_replicas": placement.min_replicas,
                "max_replicas": placement.max_replicas,
                "target_ongoing_requests": placement.target_ongoing_requests,
            }
            options["autoscaling_config"] = {k: v for k, v in bounds.items() if v is not None}
        else:
            options["num_replicas"] = placement.replicas
        return options

    def deploy(self) -> None:
        """Deploy every model and wait until each has its replicas running (blocking)."""
        try:
            serve.run_many(self._run_targets())
        except RuntimeError as err:  # Ray's message names the deployment, not the cause
            raise RuntimeError(self._why_not_running() or str(err)) from err
        self.attach()

    async def deploy_async(self) -> None:
        """`deploy()`, waiting on the event loop: cancelling it stops the wait (the front door
        stops deploying at a signal), and the caller deletes what was deployed."""
        targets = self._run_targets()
        await anyio.to_thread.run_sync(
            lambda: serve.run_many(targets, wait_for_applications_running=False)
        )
        names = [self.application_name(model.name) for model in self.schema.models]
        while True:
            status = await anyio.to_thread.run_sync(serve.status)
            found = [status.applications.get(name) for name in names]
            states = [app.status.value if app else "NOT_STARTED" for app in found]
            if "DEPLOY_FAILED" in states:
                raise RuntimeError(await anyio.to_thread.run_sync(self._why_not_running))
            if all(state == "RUNNING" for state in states):
                break
            await asyncio.sleep(_DEPLOY_POLL_S)
        await anyio.to_thread.run_sync(self.attach)

    def _run_targets(self) -> list[Any]:
        return [
            serve.RunTarget(target=app, name=self.application_name(name), route_prefix=None)
            for name, app in self.applications().items()
        ]

    def _why_not_running(self) -> str:
        """The last line of what Ray says about each model that failed to deploy."""
        status = serve.status()
        reasons = []
        for model in self.schema.models:
            app = status.applications.get(self.application_name(model.name))
            if app is None or app.status.value != "DEPLOY_FAILED":
                continue
            said = [d.message for d in app.deployments.values() if d.message] or [app.message]
            last = [line.strip() for line in "\n".join(said).splitlines() if line.strip()]
            reasons.append(
                f"model {model.name!r} did not start on Ray: {last[-1] if last else '?'}"
            )
        return "; ".join(reasons)

    def attach(self) -> None:
        """Route calls to the models' applications, deployed already (by `deploy()`, or by
        you: `serve.run(applications()[name], name=application_name(name))`)."""
        self._inbox = ray.remote(StreamInbox).options(num_cpus=0).remote()
        for model in self.schema.models:
            handle = serve.get_app_handle(self.application_name(model.name))
            self._routes[model.name].set(handle, self._inbox)

    def detach(self) -> None:
        """Stop routing calls; the applications stay deployed."""
        if self._inbox is not None:
            ray.kill(self._inbox)
            self._inbox = None

    def delete(self) -> None:
        """Delete the models' applications (their replicas drain, then run their hooks' ends).

        Waits up to `_DELETE_WAIT_S` for them to be gone: a replica Ray could never place (a
        GPU the cluster lacks) keeps its application from going, and Ray deletes it later.
        """
        self.detach()
        names = [self.application_name(model.name) for model in self.schema.models]
        for name in names:
            serve.delete(name, _blocking=False)  # all drain at once
        give_up = time.monotonic() + _DELETE_WAIT_S
        while left := [name for name in names if name in serve.status().applications]:
            if time.monotonic() >= give_up:
                log.warning("Ray has not yet deleted %s; it goes on without us", ", ".join(left))
                return
            time.sleep(_DEPLOY_POLL_S)

    def server(
        self, config: ServerConfig | None = None, *, deploys: bool = True, **options: Any
    ) -> BlazeServer:
        """blazerpc's server in front of the models: starting it deploys them (health
        NOT_SERVING meanwhile), draining it deletes them. With `deploys=False` it serves
        the applications deployed already and leaves them be. Options are ServerConfig's."""
        config = (config or ServerConfig()).replace(**options)
        self._redacts = config.error_detail == "redacted"
        server = BlazeServer(_FrontDoor(self), config, runner=self._runner)
        self._server, self._deploys = server, deploys
        return server

    def _runner(self, model: ModelSpec, metrics: Metrics | None) -> RemoteModel:
        return RemoteModel(model, self._routes[model.name], redacts_errors=self._redacts)

    async def deploy_on_ray(self) -> AsyncIterator[None]:
        """The front door's lifespan: deploy and watch the models, then delete them."""
        server = self._server
        assert server is not None
        deploys = self._deploys
        if deploys:
            log.info("deploying %d models on Ray", len(self.schema.models))
        leave = self.delete if deploys else self.detach
        try:
            if deploys:
                await self.deploy_async()
            else:
                await anyio.to_thread.run_sync(self.attach)
        except BaseException:  # failed, or cancelled (a signal while deploying)
            await anyio.to_thread.run_sync(leave)
            raise
        watcher = asyncio.ensure_future(self._watch(server))
        try:
            yield
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await anyio.to_thread.run_sync(leave)

    async def _watch(self, server: BlazeServer) -> None:
        """Each model's health and readiness follow its replicas."""
        while True:
            await asyncio.sleep(_WATCH_S)
            try:
                status = await anyio.to_thread.run_sync(serve.status)
            except Exception:  # the controller restarting: try again next time
                log.warning("reading the models' replicas from Ray failed", exc_info=True)
                continue
            for model in self.schema.models:
                app = status.applications.get(self.application_name(model.name))
                ready, reason = _readiness(model.name, app, self._placements[model.name])
                server.set_model_ready(model.name, ready, reason)


def _readiness(
    model: str, app: ApplicationStatusOverview | None, placement: Placement
) -> tuple[bool, str]:
    """Ready while a replica runs (or, scaled to zero, while Ray can start one)."""
    if app is None:
        return False, f"model {model!r} is not deployed on the Ray cluster; redeploy it."
    running, status = 0, app.status.value
    for deployment in app.deployments.values():
        running += sum(n for state, n in deployment.replica_states.items() if state == "RUNNING")
        status = deployment.status.value
    if running or (placement.min_replicas == 0 and status not in ("UNHEALTHY", "DEPLOY_FAILED")):
        return True, ""
    return False, (
        f"model {model!r} has no running replica on the Ray cluster (deployment {status}); "
        "retry in a moment."
    )


def _placed(model: ModelSpec, every: Placement | None, this_one: Placement | None) -> Placement:
    """The model's placement in code, overridden for every model, then for this one; with
    the defaults filled in. ConfigError when the overrides do not fit the code's."""
    code = model.placement or Placement()
    try:
        return _with_defaults(
            model, code.merged(every or Placement()).merged(this_one or Placement())
        )
    except DefinitionError as err:
        given = [repr(p) for p in (every, this_one) if p is not None and p != Placement()]
        raise ConfigError(
            f"model {model.name!r}: {' and '.join(given) or 'the defaults'} over "
            f"{code!r} from its code: {str(err).partition('): ')[2] or err}"
        ) from None


def _with_defaults(model: ModelSpec, placement: Placement) -> Placement:
    """Every field set: Ray's own defaults made visible (autoscaling bounds 1 to the lower
    bound), and ours (see DEFAULT_NUM_CPUS and default_max_ongoing)."""
    low, high = placement.min_replicas, placement.max_replicas
    if placement.autoscales:
        low = 1 if low is None else low
        high = max(low, 1) if high is None else high
    return Placement(
        replicas=None if placement.autoscales else placement.replicas or 1,
        min_replicas=low,
        max_replicas=high,
        target_ongoing_requests=placement.target_ongoing_requests,
        max_ongoing_requests=placement.max_ongoing_requests or default_max_ongoing(model),
        num_cpus=DEFAULT_NUM_CPUS if placement.num_cpus is None else placement.num_cpus,
        num_gpus=placement.num_gpus or 0,
    )


def default_max_ongoing(model: ModelSpec) -> int:
    """Calls one replica holds at once: what its batcher accepts, else `_STREAMS_PER_REPLICA`."""
    batching = model.batching
    if isinstance(batching, Continuous):
        return batching.max_size + batching.max_queue
    if isinstance(batching, Batching):
        return batching.max_size * batching.max_concurrent + batching.max_queue
    return _STREAMS_PER_REPLICA


class _FrontDoor:
    """The app as the front door serves it: its schema and call hooks; its lifespan hooks
    run in the replicas, and the front door's own deploys the models."""

    def __init__(self, deployment: RayDeployment) -> None:
        self._deployment = deployment

    @property
    def schema(self) -> ServiceSpec:
        return self._deployment.schema

    @property
    def lifespan_hooks(self) -> tuple[LifespanHook, ...]:
        return (self._deployment.deploy_on_ray,)

    @property
    def call_hooks(self) -> CallHooks:
        return self._deployment.app.call_hooks
