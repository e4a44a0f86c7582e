"""The `blaze` command: `blaze serve app:app` serves an app, `blaze proto app:app` exports it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import typing
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import msgspec

from blazerpc import __version__
from blazerpc.app import BlazeApp
from blazerpc.config import CLI_DEFAULTS, HELP, ConfigError, ServerConfig, env_name, flag_name
from blazerpc.errors import BreakingChangeError, DefinitionError, LifespanError, TargetError
from blazerpc.reload import ReloadUnavailableError, SourceWatcher
from blazerpc.remote.health import check_health
from blazerpc.remote.stubs import StubsError, generate_stubs
from blazerpc.runtime.loglines import LogLines
from blazerpc.runtime.metrics import (
    Metrics,
    MetricsUnavailableError,
    scrape_guard,
    serve_multiprocess_metrics,
)
from blazerpc.schema.lockfile import Lock, breaking_changes, lock_of, read_lock, write_lock
from blazerpc.schema.markers import Placement
from blazerpc.schema.spec import ServiceSpec
from blazerpc.security.keys import ApiKeys
from blazerpc.security.tls import ServerTls, client_context
from blazerpc.server import BlazeServer
from blazerpc.target import load_app, source_dir
from blazerpc.wire.proto_text import render_proto
from blazerpc.workers import ForcedExit, Supervisor, WorkerError

if TYPE_CHECKING:
    from blazerpc.ray import RayDeployment

__all__ = ("configure_logging", "main")

_USAGE_ERROR = 2
_RUNTIME_ERROR = 1
_DEBUG = "blazerpc.debug"
C = TypeVar("C", bound=Callable[..., object])
log = logging.getLogger(__name__)


def _enable_debug(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_DEBUG] = True


def _debug_option(command: C) -> C:
    """`--debug`, accepted before or after the subcommand."""
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_enable_debug,
        help="Show tracebacks instead of one-line errors.",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="blazerpc")
@_debug_option
def main() -> None:
    """blazerpc: serve Python model functions over gRPC."""


@main.command()
@click.argument("target")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the schema to this file instead of standard output.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; list each change that breaks callers of the locked schema, exit 1 if any.",
)
@click.option(
    "--allow-breaking",
    is_flag=True,
    help="Write the schema and the lock even though the change breaks existing callers.",
)
@_debug_option
def proto(target: str, output: Path | None, check: bool, allow_breaking: bool) -> None:
    """Print the .proto schema of the app TARGET (module:attr or path/to/file.py:attr).

    The attribute defaults to `app`. The schema compiles with protoc, so any language's
    gRPC tooling can generate a client from it. Field numbers come from the app's lock file
    (`app.blaze.lock` next to `app.py`), which this command creates and updates, so a
    published field never changes number; see docs/schema-evolution.md.
    """
    app = _load(target)
    try:
        schema = app.schema
        lock = read_lock(app.lock_path)
    except DefinitionError as err:
        _fail(err, f"DefinitionError: {err}")
    changes = breaking_changes(lock, schema) if lock is not None else []
    if check:
        _report_check(app.lock_path, lock, changes)
        return
    if changes and not allow_breaking:
        for change in changes:
            click.echo(f"breaking: {change}", err=True)
        _fail(
            BreakingChangeError(changes),
            f"{len(changes)} breaking changes against {app.lock_path}; nothing written. "
            "Keep old callers working, or pass --allow-breaking.",
            status=_RUNTIME_ERROR,
        )
    text = render_proto(schema)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    if app.lock_path is not None:
        new_lock = lock_of(schema)
        if new_lock != lock:
            write_lock(app.lock_path, new_lock)
            click.echo(f"wrote {app.lock_path}", err=True)


@main.command()
@click.argument("target")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the generated package into.",
)
@_debug_option
def stubs(target: str, out: Path) -> None:
    """Write typed Python client stubs for the app TARGET (betterproto, grpclib-based).

    For callers that cannot import the app. Needs `pip install 'blazerpc[stubs]'`. The
    package is named after the proto package (`BlazeApp(package=...)`).
    """
    app = _load(target)
    try:
        written = generate_stubs(app.schema, out)
    except StubsError as err:
        _fail(err, str(err))
    for path in written:
        click.echo(f"wrote {path}", err=True)


def _report_check(path: Path | None, lock: Lock | None, changes: list[str]) -> None:
    if lock is None:
        click.echo(
            f"blaze: no lock file at {path}: run `blaze proto` once and commit the lock.",
            err=True,
        )
        sys.exit(_RUNTIME_ERROR)
    for change in changes:
        click.echo(f"breaking: {change}")
    if changes:
        sys.exit(_RUNTIME_ERROR)
    click.echo(f"compatible with {path}", err=True)


def _config_options(command: C) -> C:
    """One flag per ServerConfig field, with its help text, default and BLAZE_* variable."""
    for name, field_type in reversed(list(typing.get_type_hints(ServerConfig).items())):
        default = CLI_DEFAULTS.get(name, getattr(ServerConfig(), name))
        help_text = f"{HELP[name]} [default: {_shown(default)}; env {env_name(name)}]"
        if field_type is bool:
            flag = flag_name(name)
            decls = [f"{flag}/--no-{flag[2:]}", name]
            command = click.option(*decls, default=None, help=help_text)(command)
            continue
        command = click.option(
            flag_name(name), name, type=_click_type(field_type), default=None, help=help_text
        )(command)
    return command


def _click_type(field_type: object) -> click.ParamType[Any]:
    """The click type of a config field; click only parses, ServerConfig validates."""
    args = [arg for arg in typing.get_args(field_type) if arg is not type(None)]
    if typing.get_origin(field_type) is typing.Literal:
        return click.Choice([str(arg) for arg in args])
    base = args[0] if args else field_type  # `int | None` -> int
    return click.INT if base is int else click.FLOAT if base is float else click.STRING


def _shown(default: object) -> str:
    if isinstance(default, bool):
        return "on" if default else "off"
    return "none" if default is None else str(default)


@main.command()
@click.argument("target")
@_config_options
@click.option(
    "--reload",
    "reload_",
    is_flag=True,
    help="Development: restart when the app's .py files change; new workers start before "
    "the old ones drain, so no call is lost (needs blazerpc[reload]).",
)
@click.option(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Watch this directory too (repeatable; implies --reload). "
    "[default: the directory of the app's file or package]",
)
@_debug_option
def serve(target: str, reload_: bool, reload_dirs: tuple[Path, ...], **flags: Any) -> None:
    """Serve the app TARGET (module:attr or path/to/file.py:attr) over gRPC (and HTTP).

    The first line printed is `blazerpc serving N models on HOST:PORT`, with the real port,
    once the models are loaded (plus `, HTTP on http://HOST:PORT` with --http-port). Every
    option can also be set with its BLAZE_* environment variable; a flag wins over the
    variable. SIGTERM or SIGINT drains: running calls get --grace seconds to finish, then the
    command exits 0; a second signal exits at once (1).
    """
    try:
        config = ServerConfig.load(flags, defaults=CLI_DEFAULTS)
        _check_files(config)
    except ConfigError as err:
        _fail(err, str(err))
    configure_logging(config)
    if reload_ or reload_dirs:
        sys.dont_write_bytecode = True  # a .pyc could outlive a same-size edit in one second
    app = _load(target)  # in the parent too: a definition error stops before any worker starts
    if not app.schema.models:
        logging.getLogger(__name__).warning(
            '%s has no models: decorate a function with @app.model("name") to serve it.',
            target,
        )
    watcher = None
    if reload_ or reload_dirs:
        try:
            watcher = SourceWatcher([source_dir(target), *(d.resolve() for d in reload_dirs)])
        except ReloadUnavailableError as err:
            _fail(err, str(err))
    if config.workers > 1 or watcher is not None:
        _serve_workers(target, config, app.schema, watcher)
        return
    _serve_one(app, config, announce=_print_banner)


@main.command(hidden=True)
@click.argument("target")
@click.option("--config", "config_json", required=True)
@click.option("--ready-fd", type=int, required=True)
@click.option("--metrics-dir", type=click.Path(file_okay=False))
def worker(target: str, config_json: str, ready_fd: int, metrics_dir: str | None) -> None:
    """One worker process of `blaze serve --workers N` (started by the parent, not by hand)."""
    config = msgspec.json.decode(config_json, type=ServerConfig)
    configure_logging(config)
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # a terminal's ^C reaches the parent, which drains us

    def announce(server: BlazeServer) -> None:
        """`ready`, then the banner the parent prints if this worker came with a reload."""
        with os.fdopen(ready_fd, "wb") as pipe:
            pipe.write("\n".join(["ready", *_banner(server), ""]).encode())

    metrics = Metrics(multiprocess_dir=metrics_dir) if metrics_dir else None
    _serve_one(_load(target), config, announce=announce, metrics=metrics, is_worker=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The server's address.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=50051, show_default=True, help="Its gRPC port."
)
@click.option("--model", default="", help="A model's health instead of the whole server's.")
@click.option(
    "--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for it."
)
@click.option(
    "--tls-ca",
    type=click.Path(exists=True, dir_okay=False),
    help="The server speaks TLS; its certificate is signed by this CA.",
)
@_debug_option
def health(host: str, port: int, model: str, timeout: float, tls_ca: str | None) -> None:
    """Ask a running server whether it is SERVING (grpc.health.v1): exit 0 if so, else 1.

    One line says what it answered: `127.0.0.1:50051: SERVING`, `... model generate:
    NOT_SERVING`, `...: unreachable: Connection refused`. For a container's HEALTHCHECK and
    Kubernetes exec probes: needs nothing but blazerpc, and speaks TLS.
    """
    tls = client_context(tls_ca, None, None) if tls_ca else None
    answer = asyncio.run(check_health(host, port, model=model, timeout=timeout, tls=tls))
    click.echo(answer.line)
    sys.exit(0 if answer.is_serving else _RUNTIME_ERROR)


_PLACEMENT_OPTIONS = {
    "replicas": (int, "Replicas of each model (MODEL=N: of one model)."),
    "min_replicas": (int, "Autoscaling: the fewest replicas (MODEL=N: of one model)."),
    "max_replicas": (int, "Autoscaling: the most replicas (MODEL=N: of one model)."),
    "target_ongoing_requests": (
        float,
        "Autoscaling: the calls in progress per replica Ray aims at (MODEL=X: one model).",
    ),
    "max_ongoing_requests": (
        int,
        "The most calls one replica holds at once; more wait (MODEL=N: one model). "
        "[default: what the model's batcher accepts, else 100]",
    ),
    "num_cpus": (float, "CPUs one replica reserves (MODEL=X: one model). [default: 0.25]"),
    "num_gpus": (float, "GPUs one replica reserves (MODEL=X: one model). [default: 0]"),
}
"""`blaze ray`'s placement flags: Placement's fields, over each model's `placement=`."""
RAY_ENV_PREFIX = "BLAZE_RAY_"


def _placement_options(command: C) -> C:
    for name, (_, help_text) in reversed(_PLACEMENT_OPTIONS.items()):
        env = RAY_ENV_PREFIX + name.upper()
        command = click.option(
            "--" + name.replace("_", "-"),
            name,
            multiple=True,
            envvar=env,
            metavar="[MODEL=]VALUE",
            help=f"{help_text} [env {env}]",
        )(command)
    return command


@main.command("ray")
@click.argument("target")
@click.option(
    "--address",
    default="local",
    show_default=True,
    envvar=RAY_ENV_PREFIX + "ADDRESS",
    help="The Ray cluster: `local` starts one on this machine bound to 127.0.0.1 (and stops "
    f"it on exit), `auto` or `ray://HOST:10001` joins one. [env {RAY_ENV_PREFIX}ADDRESS]",
)
@click.option(
    "--cluster-cpus",
    type=click.IntRange(min=1),
    envvar=RAY_ENV_PREFIX + "CLUSTER_CPUS",
    help="With --address local: the CPUs the cluster offers. [default: this machine's; "
    f"env {RAY_ENV_PREFIX}CLUSTER_CPUS]",
)
@click.option(
    "--working-dir",
    type=click.Path(exists=True, file_okay=False),
    envvar=RAY_ENV_PREFIX + "WORKING_DIR",
    help="Ship this directory to the cluster's nodes (Ray's runtime_env) and import the app "
    "from it: for a cluster on other machines. [default: replicas import the app from this "
    f"machine's paths; env {RAY_ENV_PREFIX}WORKING_DIR]",
)
@click.option(
    "--name",
    envvar=RAY_ENV_PREFIX + "NAME",
    help="Name the models' Serve applications NAME.MODEL, so a second deployment of the app "
    "(a new version) runs beside the first. [default: the service's full name, "
    f"blazerpc.InferenceService; env {RAY_ENV_PREFIX}NAME]",
)
@_placement_options
@_config_options
@_debug_option
def ray_command(
    target: str,
    address: str,
    cluster_cpus: int | None,
    working_dir: str | None,
    name: str | None,
    **flags: Any,
) -> None:
    """Serve the app TARGET's models as replicated deployments on a Ray cluster.

    blazerpc's server is the front door, on --port (and --http-port) as with `blaze serve`;
    each model runs in its own Ray Serve replicas (`placement=` in code, the flags here).
    The first line printed is `blazerpc serving N models on HOST:PORT` once every model has
    its replicas running. SIGTERM or SIGINT drains the front door, then deletes the models'
    deployments (and stops a local cluster). Needs `pip install 'blazerpc[ray]'`.
    """
    placement_flags = {name: flags.pop(name) for name in _PLACEMENT_OPTIONS}
    try:
        config = ServerConfig.load(flags, defaults=CLI_DEFAULTS)
        _check_files(config)
        if config.workers > 1:
            raise ConfigError(
                "option --workers: on Ray, each model scales out as replicas; use --replicas N."
            )
        placement, placements = _placements(placement_flags)
    except (ConfigError, DefinitionError) as err:
        _fail(err, str(err))
    configure_logging(config)
    try:
        from blazerpc.ray import RayCluster, RayDeployment
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] != "ray":
            raise
        _fail(err, "blaze ray needs Ray Serve: pip install 'blazerpc[ray]'.")
    _load(target)  # a definition error is one line before any cluster starts
    try:
        deployment = RayDeployment(
            target,
            placement=placement,
            placements=placements,
            working_dir=working_dir,
            name=name,
        )
    except ConfigError as err:
        _fail(err, str(err))
    cluster = RayCluster(address, num_cpus=cluster_cpus)
    try:
        cluster.start()
    except Exception as err:
        _fail(err, f"cannot reach the Ray cluster at {address!r}: {err}", status=_RUNTIME_ERROR)
    try:
        _serve_server(
            lambda: deployment.server(config),
            config,
            lambda server: _print_lines(_ray_banner(server, deployment)),
        )
    finally:
        cluster.stop()


def _placements(flags: dict[str, tuple[str, ...]]) -> tuple[Placement, dict[str, Placement]]:
    """`--replicas 2 --num-gpus generate=1` -> Placement(replicas=2), {generate: ...}."""
    every: dict[str, Any] = {}
    per_model: dict[str, dict[str, Any]] = {}
    for name, values in flags.items():
        kind = _PLACEMENT_OPTIONS[name][0]
        for value in values:
            model, _, text = value.rpartition("=")
            try:
                number = kind(text)
            except ValueError:
                raise ConfigError(
                    f"option --{name.replace('_', '-')} {value!r}: {text!r} is not a "
                    f"{'whole ' if kind is int else ''}number. Write VALUE or MODEL=VALUE."
                ) from None
            (per_model.setdefault(model, {}) if model else every)[name] = number
    return Placement(**every), {model: Placement(**v) for model, v in per_model.items()}


def _ray_banner(server: BlazeServer, deployment: RayDeployment) -> list[str]:
    """The first line, then one per model with its replicas and resources."""
    first, *models = _banner(server)
    return [
        first,
        *(
            f"{line}  {_describe_placement(deployment.placement(model.name))}"
            for line, model in zip(models, server.app.schema.models, strict=True)
        ),
    ]


def _describe_placement(placement: Placement) -> str:
    """`2 replicas, 0.25 CPU` or `1-4 replicas (autoscaling), 1 CPU, 1 GPU`."""
    if placement.autoscales:
        replicas = f"{placement.min_replicas}-{placement.max_replicas} replicas (autoscaling)"
    else:
        replicas = f"{placement.replicas} replica{'' if placement.replicas == 1 else 's'}"
    parts = [replicas, f"{placement.num_cpus:g} CPU"]
    if placement.num_gpus:
        parts.append(f"{placement.num_gpus:g} GPU")
    return ", ".join(parts)


def configure_logging(config: ServerConfig) -> None:
    """Log as `blaze serve` does: to stderr, at config.log_level (INFO: the access log on)."""
    logging.basicConfig(  # with --workers, each line says which worker wrote it
        level=config.log_level.upper(),
        handlers=[
            LogLines(sys.stderr, show_process=config.workers > 1, json=config.log_format == "json")
        ],
    )
    # uvicorn narrates its own shutdown at INFO under the name "uvicorn.error"; blazerpc
    # already says what the drain does, so keep only uvicorn's warnings and errors
    logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, logging.root.level))


def _serve_one(
    app: BlazeApp,
    config: ServerConfig,
    announce: Callable[[BlazeServer], None],
    metrics: Metrics | None = None,
    *,
    is_worker: bool = False,
) -> None:
    _serve_server(
        lambda: BlazeServer(app, config, metrics=metrics, shares_port=is_worker),
        config,
        announce,
        is_worker=is_worker,
    )


def _serve_server(
    make_server: Callable[[], BlazeServer],
    config: ServerConfig,
    announce: Callable[[BlazeServer], None],
    *,
    is_worker: bool = False,
) -> None:
    """Serve until a signal; a failure to listen or to load is one line and an exit status."""
    try:
        server = make_server()
        _run(_serve_until_signal(server, announce, is_worker=is_worker))
    except OSError as err:
        where = err.filename or f"{config.host}:{config.port}"
        _fail(err, f"cannot listen on {where}: {err.strerror or err}.")
    except LifespanError as err:
        _fail(err, f"{err}. The server did not start.", status=_RUNTIME_ERROR)
    except (MetricsUnavailableError, ConfigError) as err:
        _fail(err, str(err))


def _check_files(config: ServerConfig) -> None:
    """Read the TLS and key files once, before any worker starts: a bad one is one line."""
    tls = ServerTls.of(config)
    if tls is not None:
        tls.context(alpn=["h2"])
    ApiKeys.of(config)


def _serve_workers(
    target: str, config: ServerConfig, schema: ServiceSpec, watcher: SourceWatcher | None
) -> None:
    with contextlib.ExitStack() as cleanup:
        metrics_dir = None
        if config.metrics_port is not None:
            metrics_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="blazerpc-"))
        supervisor = Supervisor(
            target, config, metrics_dir=metrics_dir, reloads=watcher is not None
        )
        if metrics_dir is not None and config.metrics_port is not None:
            try:
                keys, tls = scrape_guard(config, ApiKeys.of(config))
                _, stop, forget = serve_multiprocess_metrics(
                    config.host, config.metrics_port, metrics_dir, keys=keys, tls=tls
                )
            except MetricsUnavailableError as err:
                _fail(err, str(err))
            cleanup.callback(stop)
            supervisor.on_worker_exit.append(forget)
        if watcher is not None:
            watcher.start()  # before the workers: an edit while they load is not missed
            cleanup.callback(watcher.close)
            supervisor.on_reload.append(_print_lines)
        _supervise(supervisor, config, schema, watcher)


def _supervise(
    supervisor: Supervisor,
    config: ServerConfig,
    schema: ServiceSpec,
    watcher: SourceWatcher | None,
) -> None:
    try:
        supervisor.start()
        if not supervisor.is_stopping:
            _print(_serving(len(schema.models), config, supervisor.port, supervisor.http_port))
            _print_lines(_model_lines(schema))
        if watcher is not None:
            roots = ", ".join(str(root) for root in watcher.roots)
            log.info("reload: watching %s for changed .py files", roots)
        supervisor.supervise(watcher.changed if watcher is not None else None)
    except OSError as err:
        where = err.filename or f"{config.host}:{config.port}"
        _fail(err, f"cannot listen on {where}: {err.strerror or err}.")
    except WorkerError as err:
        _fail(err, str(err), status=_RUNTIME_ERROR)
    except ForcedExit:
        click.echo(
            "blaze: second signal: workers killed without waiting for running calls", err=True
        )
        sys.exit(_RUNTIME_ERROR)


def _print_banner(server: BlazeServer) -> None:
    _print_lines(_banner(server))


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        _print(line)


def _banner(server: BlazeServer) -> list[str]:
    """The first line, then one per model."""
    http_port = server.http_port if server.config.http_port is not None else None
    schema = server.app.schema
    return [
        _serving(len(schema.models), server.config, server.port, http_port),
        *_model_lines(schema),
    ]


def _model_lines(schema: ServiceSpec) -> list[str]:
    """After the first line, one line per model: `  generate  server-streaming  /pkg.S/Rpc`."""
    width = max((len(model.name) for model in schema.models), default=0)
    shapes = max((len(model.shape.value) for model in schema.models), default=0)
    return [
        f"  {model.name:<{width}}  {model.shape.value:<{shapes}}  {schema.rpc_path(model)}".rstrip()
        for model in schema.models
    ]


def _serving(model_count: int, config: ServerConfig, port: int, http_port: int | None) -> str:
    """`blazerpc serving 2 models on 127.0.0.1:50051, HTTP on http://127.0.0.1:8080`.

    Over TLS: `... on 127.0.0.1:50051 (TLS), HTTP on https://127.0.0.1:8080`.
    """
    is_tls = config.tls_cert is not None
    line = f"blazerpc serving {model_count} models on {config.host}:{port}"
    line += " (TLS)" if is_tls else ""
    scheme = "https" if is_tls else "http"
    return line if http_port is None else f"{line}, HTTP on {scheme}://{config.host}:{http_port}"


def _print(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed: bench/README.md shows it serving faster."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _serve_until_signal(
    server: BlazeServer, announce: Callable[[BlazeServer], None], *, is_worker: bool = False
) -> None:
    """Serve until the first SIGINT/SIGTERM, then drain; a second signal exits at once.

    A worker ignores further signals: systemd and `kill -- -PGID` signal the whole process
    group, so a worker gets the parent's forwarded SIGTERM as well as its own, and forcing
    an exit is the parent's job (it kills the workers on its own second signal).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set() and not is_worker:
            click.echo("blaze: second signal: exiting without waiting for running calls", err=True)
            os._exit(_RUNTIME_ERROR)  # the drain may be waiting on model threads: do not join
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):  # before the first line: scripts act on it
        loop.add_signal_handler(signum, on_signal)
    start = asyncio.ensure_future(server.start())
    await asyncio.wait(
        {start, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    if start.done():
        start.result()  # a failed lifespan raises here
        announce(server)
        await stop.wait()
    else:  # still loading: stop loading (blaze ray: stop deploying) instead of waiting for it
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
    log.info("draining: %d calls running, grace %.1f s", server.running_calls, server.config.grace)
    await server.drain()
    await asyncio.gather(start, return_exceptions=True)


def _load(target: str) -> BlazeApp:
    """The app TARGET names; any failure is one line on stderr and exit status 2."""
    try:
        return load_app(target)
    except (TargetError, DefinitionError) as err:
        _fail(err, f"{type(err).__name__}: {err}")
    except Exception as err:  # the user's module raised on import: one line, not a traceback
        _fail(
            err,
            f"importing {target!r} raised {type(err).__name__}: {err}. "
            "Fix the error in that module (--debug shows the traceback).",
        )


def _fail(err: Exception, message: str, *, status: int = _USAGE_ERROR) -> NoReturn:
    if click.get_current_context().meta.get(_DEBUG):
        raise err
    click.echo(f"blaze: {message}", err=True)
    sys.exit(status)
