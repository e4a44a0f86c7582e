"""What the integration tests share, in one module: a test module never imports another.

- `Probe`: what a model did (calls started, items produced, its generator closed) and a gate it
  waits at, so a test waits for what really happened instead of sleeping.
- Stock grpcio: raw calls by rpc path, typed unary calls, stubs compiled from `blaze proto`
  output, and the client scripts in stock/ run in their own process.
- `serve_http`: `blazerpc.testing.serve_app`'s twin that serves the HTTP gateway too.
- `blaze_serve`: the `blaze serve` executable as a subprocess, on a free port.
- `FOUR_SHAPES` and `stock_every_shape`: an app with one model of each shape, and a stock
  grpcio caller of all four (the TLS and API-key tests call every shape).
- `run_in_client_venv`: a client as it ships (MLServer's, the KServe SDK) running one of the
  scripts in clients/, in a virtual environment of its own, built once and cached.

It lives in tests/integration/ because only integration tests start servers; tests/unit/ needs
none of it. The `probe` fixture is in tests/integration/conftest.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.resources
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio
import anyio.to_thread
import grpc
import httpx
import pytest
from google.protobuf.message import Message
from grpc_tools import protoc

from blazerpc import BlazeApp, BlazeClient, BlazeServer
from blazerpc.wire.protobuf import SchemaCodec

ROOT = Path(__file__).resolve().parents[2]
BLAZE = shutil.which("blaze", path=str(Path(sys.executable).parent)) or "blaze"
STOCK_CLIENT = Path(__file__).parent / "stock" / "calls.py"
BETTERPROTO_CLIENT = Path(__file__).parent / "stock" / "betterproto_calls.py"
WAIT_S = 10.0
"""The bound on every wait for something a model, a server or a process does: far beyond what
it takes, so reaching it means the thing never happened."""

M = TypeVar("M", bound=Message)
T = TypeVar("T")


class Probe:
    """What a model did, told to the test as it happens, and a gate the model can wait at.

    Thread-safe, because sync models run in worker threads: the test awaits each fact through a
    worker thread, bounded by WAIT_S.
    """

    def __init__(self) -> None:
        self.produced = 0
        """Items a streaming model has produced."""
        self.steps: list[tuple[str, int]] = []
        """(stream, item number), in the order the streams stepped."""
        self.closed = threading.Event()
        """Set by a generator's `finally`."""
        self._started = 0
        self._changed = threading.Condition()
        self._released = threading.Event()

    def start(self) -> None:
        """Model side: one more call has reached the model."""
        with self._changed:
            self._started += 1
            self._changed.notify_all()

    async def wait_started(self, calls: int = 1) -> None:
        """Until `calls` calls have reached the model: they are in flight."""

        def reached() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: self._started >= calls, WAIT_S)

        assert await anyio.to_thread.run_sync(reached), (
            f"{self._started} of {calls} calls reached the model"
        )

    def release(self) -> None:
        """Test side: open the gate; every model waiting at it goes on."""
        self._released.set()

    def wait_released(self) -> bool:
        """Model side, from a worker thread: wait at the gate; False if it never opened."""
        return self._released.wait(WAIT_S)

    async def until_released(self) -> bool:
        """Model side, from the event loop: wait at the gate; False if it never opened."""
        return await anyio.to_thread.run_sync(self.wait_released, abandon_on_cancel=True)

    async def wait_closed(self) -> None:
        """Until the model's generator has run its `finally`."""
        closed = await anyio.to_thread.run_sync(self.closed.wait, WAIT_S)
        assert closed, "the generator stayed open"


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Until `condition()` holds, bounded: for server state that no model can report (the
    server's phase, its count of running calls), so there is no event to wait on."""
    with anyio.fail_after(WAIT_S):
        while not condition():  # noqa: ASYNC110 (the state has no event to wait on)
            await anyio.sleep(0.005)  # a poll interval, not a guess at how long `what` takes
    assert condition(), what


@dataclass(frozen=True, slots=True)
class Served:
    """A server started by `serve_http`, with a client on each of its ports."""

    server: BlazeServer
    client: BlazeClient
    """Ours, on the gRPC port."""
    http: httpx.AsyncClient
    """On the HTTP port: request paths such as /models/echo are relative to it."""


@contextlib.asynccontextmanager
async def serve_http(
    app: BlazeApp,
    *,
    timeout: float = WAIT_S,  # noqa: ASYNC109 (the deadline of the clients' calls, as serve_app's)
    **options: Any,
) -> AsyncIterator[Served]:
    """`serve_app` with the HTTP gateway on a port of its own too; `options` are ServerConfig's.

    ```python
    async with serve_http(app, max_streams=1) as served:
        assert (await served.http.post("/models/add", json={"a": 1})).json() == {"result": 1}
    ```
    """
    async with (
        BlazeServer(app, host="127.0.0.1", port=0, http_port=0, **options) as server,
        BlazeClient("127.0.0.1", server.port, app=app, timeout=timeout) as client,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=timeout) as http,
    ):
        yield Served(server, client, http)


@dataclass(frozen=True, slots=True)
class RawReply:
    """What a stock client saw of one call: its status, and the raw messages that came back."""

    code: grpc.StatusCode
    details: str
    messages: list[bytes]


async def raw_call(port: int, path: str, body: bytes, *, streaming: bool = False) -> RawReply:
    """One call by rpc path with raw bytes, through stock grpcio: what any client can send,
    whether or not it matches the schema."""

    def call() -> RawReply:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                if streaming:
                    messages = list(channel.unary_stream(path)(body, timeout=WAIT_S))
                else:
                    messages = [channel.unary_unary(path)(body, timeout=WAIT_S)]
            except grpc.RpcError as err:
                return RawReply(err.code(), err.details() or "", [])
        return RawReply(grpc.StatusCode.OK, "", messages)

    return await _in_thread(call)


async def stock_unary(port: int, path: str, request: Message, response_type: type[M]) -> M:
    """One unary call through stock grpcio with protoc-generated message classes."""

    def call() -> M:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_type.FromString,
            )
            response: M = unary(request, timeout=WAIT_S)
        return response

    return await _in_thread(call)


async def _in_thread(call: Callable[[], T]) -> T:
    """grpcio's blocking API, off the event loop. Not grpc.aio, whose process-wide state
    outlives each test's event loop and can fail a later test's calls."""
    return await anyio.to_thread.run_sync(call)


def compile_stubs(proto: str, file_name: str, where: Path) -> Path:
    """`blaze proto` output, saved as `file_name` in `where` and compiled there by grpcio-tools'
    protoc: the `_pb2.py` messages and `_pb2_grpc.py` stubs a stock Python client imports."""
    (where / file_name).parent.mkdir(parents=True, exist_ok=True)
    (where / file_name).write_text(proto, encoding="utf-8")
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [f"-I{where}", f"-I{well_known}", f"--python_out={where}", f"--grpc_python_out={where}"]
    assert protoc.main(["protoc", *args, str(where / file_name)]) == 0
    return where


async def run_client(script: Path, stubs: Path, port: int, scenario: str) -> dict[str, Any]:
    """Run a client script from stock/ in its own process (every example's schema is the file
    blazerpc.proto, and one process holds one file of a name); what it printed, as JSON."""
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, str(script), str(stubs), str(port), scenario], check=False
        )
    assert result.returncode == 0, result.stderr.decode()
    seen: dict[str, Any] = json.loads(result.stdout)
    return seen


CLIENTS = Path(__file__).parent / "clients"
CLIENT_VENVS = Path(
    os.environ.get("BLAZERPC_TEST_CLIENT_VENVS")
    or Path.home() / ".cache" / "blazerpc" / "client-venvs"
)
"""Where the clients' virtual environments are kept between runs of the suite. (Not a
`BLAZE_*` name: `blaze serve` refuses any variable of that prefix it does not know.)"""


def client_venv(name: str) -> Path:
    """The Python of a virtual environment with clients/NAME.txt installed: built once, in a
    folder named after a hash of those pins, so a later run reuses it and a changed pin makes a
    new one. A package that cannot be installed skips the test, with pip's reason."""
    pins = (CLIENTS / f"{name}.txt").read_bytes()
    tag = hashlib.sha256(pins + sys.version.encode()).hexdigest()[:16]
    home = CLIENT_VENVS / f"{name}-{tag}"
    python = home / "bin" / "python"
    CLIENT_VENVS.mkdir(parents=True, exist_ok=True)
    with open(CLIENT_VENVS / f"{name}.lock", "w") as lock:  # one build at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / "ready").exists():
            return python
        shutil.rmtree(home, ignore_errors=True)  # a build that stopped half-way
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        built = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(CLIENTS / f"{name}.txt")],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            reason = f"{name}'s client cannot be installed: {built.stderr.strip()[-500:]}"
            print(reason, file=sys.stderr)
            pytest.skip(reason)
        (home / "ready").write_text("")
        for stale in CLIENT_VENVS.glob(f"{name}-*"):  # built from pins changed since
            if stale != home:
                shutil.rmtree(stale, ignore_errors=True)
    return python


async def run_in_client_venv(name: str, script: str, *args: str) -> list[str]:
    """Run clients/SCRIPT with NAME's client environment; the lines it printed."""
    python = await anyio.to_thread.run_sync(client_venv, name)
    with anyio.fail_after(120):
        result = await anyio.run_process([str(python), str(CLIENTS / script), *args], check=False)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return result.stdout.decode().splitlines()


def free_port() -> int:
    """A port nothing listens on, for a subprocess that must be told its port in advance."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True, slots=True)
class ServeProcess:
    """A running `blaze serve`, as `blaze_serve` started it."""

    process: subprocess.Popen[str]
    port: int
    """The gRPC port, read off the first line."""
    first_line: str


@contextlib.contextmanager
def blaze_serve(
    target: str,
    *options: str,
    cwd: Path = ROOT,
    stderr: int | IO[str] | None = None,
    new_session: bool = False,
    command: str = "serve",
) -> Iterator[ServeProcess]:
    """`blaze serve TARGET --port 0 OPTIONS`, up once it printed its first line, until the block
    ends; then SIGTERM if it still runs, and a kill if it does not exit within WAIT_S.

    Its stdout is a pipe (the first line names the port); `stderr=subprocess.PIPE` to read the
    log, else it goes where pytest captures it. `command="ray"` runs `blaze ray` instead.
    """
    command_line = [BLAZE, command, target, "--port", "0", *options]
    process = subprocess.Popen(
        command_line,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=new_session,
    )
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], 60)  # nothing read yet: no buffer
        assert readable, f"blaze {command} printed nothing in 60 s"
        first_line = process.stdout.readline()
        found = re.search(r" on 127\.0\.0\.1:(\d+)", first_line)
        assert first_line.startswith("blazerpc serving ") and found, first_line
        yield ServeProcess(process, int(found[1]), first_line)
    finally:
        _stop(process, new_session=new_session)


def _stop(process: subprocess.Popen[str], *, new_session: bool) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            if new_session:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its workers too
            process.kill()
    process.communicate()


async def read_line(stream: IO[str], containing: str) -> str:
    """The next line of a subprocess's output that contains `containing`, bounded by WAIT_S."""
    with anyio.fail_after(WAIT_S):
        while True:
            line = await anyio.to_thread.run_sync(stream.readline, abandon_on_cancel=True)
            assert line, f"the output ended before a line containing {containing!r}"
            if containing in line:
                return line


def _four_shapes_app() -> BlazeApp:
    app = BlazeApp()

    @app.model("add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.model("count", streaming=True)
    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @app.model("total")
    async def total(numbers: AsyncIterator[int]) -> int:
        return sum([n async for n in numbers])

    @app.model("echo", streaming=True)
    async def echo(words: AsyncIterator[str]) -> AsyncIterator[str]:
        async for word in words:
            yield word.upper()

    return app


FOUR_SHAPES = _four_shapes_app()
"""add (unary), count (server stream), total (client stream), echo (bidirectional)."""
EVERY_SHAPE = {"add": 5, "count": [0, 1, 2], "total": 6, "echo": ["A", "B"]}
"""What `stock_every_shape` sees when every call succeeds."""


def stock_every_shape(
    channel: grpc.Channel, metadata: Sequence[tuple[str, str]] = ()
) -> dict[str, object]:
    """All four shapes of FOUR_SHAPES through stock grpcio on `channel`: what each returned."""
    classes = SchemaCodec(FOUR_SHAPES.schema).classes

    def method(kind: str, name: str) -> Any:
        request, response = classes[f"{name}Request"], classes[f"{name}Response"]
        return getattr(channel, kind)(
            f"/blazerpc.InferenceService/Predict{name}",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )

    options: dict[str, Any] = {"timeout": WAIT_S, "metadata": list(metadata)}
    add = method("unary_unary", "Add")(classes["AddRequest"](a=2, b=3), **options)
    count = method("unary_stream", "Count")(classes["CountRequest"](n=3), **options)
    numbers = [classes["TotalRequest"](numbers=n) for n in (1, 2, 3)]
    total = method("stream_unary", "Total")(iter(numbers), **options)
    words = [classes["EchoRequest"](words=w) for w in ("a", "b")]
    echo = method("stream_stream", "Echo")(iter(words), **options)
    return {
        "add": add.result,
        "count": [r.result for r in count],
        "total": total.result,
        "echo": [r.result for r in echo],
    }
