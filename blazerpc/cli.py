"""The `blaze` command: `blaze serve app:app` serves an app, `blaze proto app:app` exports it."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from blazerpc import __version__
from blazerpc.app import BlazeApp
from blazerpc.codegen import render_proto
from blazerpc.errors import DefinitionError, TargetError
from blazerpc.server import BlazeServer
from blazerpc.target import load_app

__all__ = ("main",)

_USAGE_ERROR = 2
_DEBUG = "blazerpc.debug"
C = TypeVar("C", bound=Callable[..., object])


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
@_debug_option
def proto(target: str, output: Path | None) -> None:
    """Print the .proto schema of the app TARGET (module:attr or path/to/file.py:attr).

    The attribute defaults to `app`. The schema compiles with protoc, so any language's
    gRPC tooling can generate a client from it.
    """
    text = render_proto(_load(target).schema)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


@main.command()
@click.argument("target")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=50051,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (printed on the first line).",
)
@_debug_option
def serve(target: str, host: str, port: int) -> None:
    """Serve the app TARGET (module:attr or path/to/file.py:attr) over gRPC.

    The first line printed is `blazerpc serving N models on HOST:PORT`, with the real port.
    SIGINT or SIGTERM stops the server, and the command exits 0.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = _load(target)
    try:
        _run(_serve_until_signal(BlazeServer(app, host=host, port=port)))
    except OSError as err:
        _fail(err, f"cannot listen on {host}:{port}: {err.strerror or err}.")


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed: bench/README.md shows it serving faster."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _serve_until_signal(server: BlazeServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before the first line: scripts act on it
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    count = len(server.app.registry)
    click.echo(f"blazerpc serving {count} models on {server.host}:{server.port}")
    sys.stdout.flush()
    await stop.wait()
    await server.close()


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


def _fail(err: Exception, message: str) -> NoReturn:
    if click.get_current_context().meta.get(_DEBUG):
        raise err
    click.echo(f"blaze: {message}", err=True)
    sys.exit(_USAGE_ERROR)
