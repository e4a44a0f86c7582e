"""Workers: `blaze serve --workers N` runs N server processes on one port.

Each worker is a fresh `python -m blazerpc worker` process that imports the app and runs its
lifespan hooks itself, so weights load after the process starts (never shared across a fork)
and each worker has its own health, batcher and drain. The port is shared with SO_REUSEPORT:
the kernel hands each new *connection* to one worker, so a client with one connection stays
on one worker. The parent loads no model; it reserves the port, starts the workers, waits
until every one is ready, forwards SIGTERM/SIGINT as SIGTERM, and restarts a worker that dies.

With `--reload` (reload.py watches the files) the parent replaces every worker when the code
changes: the new set starts beside the old one (the port is shared, so both serve), and only
once each new worker is ready do the old ones drain. A new version that fails to start is
stopped, and the old one goes on serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

import msgspec

from blazerpc.config import ServerConfig
from blazerpc.errors import BlazeError
from blazerpc.server import bind_tcp

__all__ = ("ForcedExit", "Supervisor", "WorkerError")

log = logging.getLogger(__name__)

_POLL_S = 0.1
_MAX_BACKOFF_S = 10.0
_QUICK_DEATH_S = 5.0
"""A worker that dies sooner than this after starting is restarted with a growing delay."""


class WorkerError(BlazeError):
    """A worker could not start (its import or lifespan failed), so the server did not start."""


@dataclass(slots=True, eq=False)
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    ready_fd: int | None
    """The pipe the worker writes `ready` and its banner into, then closes; None once read."""
    started: float = field(default_factory=time.monotonic)
    is_ready: bool = False
    message: bytes = b""


class Supervisor:
    """Starts, watches and stops the worker processes of one `blaze serve --workers N`."""

    def __init__(
        self,
        target: str,
        config: ServerConfig,
        *,
        metrics_dir: str | None = None,
        reloads: bool = False,
    ) -> None:
        self.target = target
        self._env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"} if reloads else None
        """With --reload, workers write no .pyc: one could outlive a same-size edit."""
        self.config = config
        self._metrics_dir = metrics_dir
        self._workers: dict[int, _Worker] = {}
        self._others: list[_Worker] = []
        """Workers of an older version of the code: serving while a reload starts, then draining."""
        self._reservations: list[socket.socket] = []
        self._stop_requests = 0
        self._quick_deaths = 0
        self.port = config.port
        self.http_port = config.http_port
        self.on_worker_exit: list[Callable[[int], None]] = []
        """Called with each exited worker's pid (metrics forget its live gauges)."""
        self.on_reload: list[Callable[[list[str]], None]] = []
        """Called after a reload with the banner lines the first new worker wrote."""

    @property
    def is_stopping(self) -> bool:
        """A stop was requested: the workers are draining or gone."""
        return self._stop_requests > 0

    def start(self) -> None:
        """Reserve the port, start every worker and wait until each one serves.

        Raises WorkerError if one exits before it is ready (the others are stopped), and
        returns early if a stop was requested meanwhile.
        """
        self._install_signal_handlers()
        self.port = self._reserve(self.config.port)
        if self.config.http_port is not None:
            self.http_port = self._reserve(self.config.http_port)
        for index in range(self.config.workers):
            self._spawn(index)
        try:
            self._wait_ready()
        except WorkerError:
            self._terminate_all()
            self._wait_all_exited()
            raise

    def supervise(self, changed: Callable[[], list[str]] | None = None) -> None:
        """Until a stop is requested, restart workers that die and, when `changed()` names
        changed files, reload; then wait for every drain."""
        while not self._stop_requests:
            for worker in list(self._workers.values()):
                if worker.process.poll() is not None:
                    self._restart(worker)
            self._reap_others()
            paths = changed() if changed is not None else []
            if paths:
                self.reload(paths, changed)
            self._read_ready(_POLL_S)
        self._wait_all_exited()
        for reservation in self._reservations:
            reservation.close()

    def reload(self, paths: list[str], changed: Callable[[], list[str]] | None = None) -> bool:
        """Replace every worker with one running the code as it is now; False (and the old
        workers still serving) if the new code does not start. A change saved while the new
        workers start (`changed()`) stops them and starts over with the newest code."""
        began = time.monotonic()
        log.info(
            "reloading: %s changed; starting %d new workers", _shown(paths), self.config.workers
        )
        old = list(self._workers.values())
        self._others += old
        self._workers = {}
        for index in range(self.config.workers):
            self._spawn(index)
        try:
            newer = self._wait_ready(changed)
        except WorkerError as err:
            self._retire(list(self._workers.values()))
            self._workers = {worker.index: worker for worker in old}
            self._others = [worker for worker in self._others if worker not in old]
            log.error(
                "reload failed: %s The previous version goes on serving; fix the code and save.",
                err,
            )
            return False
        if self._stop_requests:
            return False
        if newer:
            log.info(
                "reload: %s changed again while the new workers started; starting over",
                _shown(newer),
            )
            self._retire(list(self._workers.values()), kill=True)
            self._workers = {worker.index: worker for worker in old}
            self._others = [worker for worker in self._others if worker not in old]
            return self.reload(newer, changed)
        self._retire(old)
        log.info("reloaded in %.1f s; %d old workers draining", time.monotonic() - began, len(old))
        banner = self._workers[0].message.decode("utf-8", "replace").splitlines()[1:]
        for hook in self.on_reload:
            hook(banner)
        return True

    def _retire(self, workers: list[_Worker], *, kill: bool = False) -> None:
        """SIGTERM: each drains its running calls and exits (SIGKILL for workers that never
        served, which may be stuck loading); reaped by _reap_others."""
        for worker in workers:
            if worker not in self._others:
                self._others.append(worker)
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)

    def _reap_others(self) -> None:
        for worker in [w for w in self._others if w.process.poll() is not None]:
            self._others.remove(worker)
            self._close_pipe(worker)
            self._note_exit(worker)

    def _restart(self, dead: _Worker) -> None:
        status = dead.process.returncode
        lived = time.monotonic() - dead.started
        self._close_pipe(dead)
        self._note_exit(dead)
        self._quick_deaths = self._quick_deaths + 1 if lived < _QUICK_DEATH_S else 0
        delay = min(_MAX_BACKOFF_S, 0.5 * 2**self._quick_deaths) if self._quick_deaths else 0.0
        log.warning(
            "worker %d (pid %d) exited with status %s after %.1f s; restarting it%s",
            dead.index,
            dead.process.pid,
            status,
            lived,
            f" in {delay:.1f} s" if delay else "",
        )
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self._stop_requests:
            time.sleep(_POLL_S)
        if not self._stop_requests:
            self._spawn(dead.index)

    def _reserve(self, port: int) -> int:
        reservation = _reserve(self.config.host, port)
        self._reservations.append(reservation)
        return int(reservation.getsockname()[1])

    def _spawn(self, index: int) -> None:
        read_fd, write_fd = os.pipe()
        worker_config = msgspec.json.encode(
            self.config.replace(port=self.port, http_port=self.http_port)
        ).decode()
        command = [sys.executable, "-m", "blazerpc", "worker", self.target]
        command += ["--config", worker_config, "--ready-fd", str(write_fd)]
        if self._metrics_dir is not None:
            command += ["--metrics-dir", self._metrics_dir]
        process = subprocess.Popen(command, pass_fds=(write_fd,), env=self._env)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._workers[index] = _Worker(index, process, read_fd)
        log.info("worker %d started (pid %d)", index, process.pid)

    def _wait_ready(self, changed: Callable[[], list[str]] | None = None) -> list[str]:
        """Until every worker is ready; the files `changed()` names if any change first."""
        while not self._stop_requests and not all(w.is_ready for w in self._workers.values()):
            newer = changed() if changed is not None else []
            if newer:
                return newer
            for worker in self._workers.values():
                if not worker.is_ready and worker.process.poll() is not None:
                    raise WorkerError(
                        f"worker {worker.index} exited with status {worker.process.returncode} "
                        "before it was ready (its error is printed above)."
                    )
            self._read_ready(_POLL_S)
        return []

    def _read_ready(self, timeout: float) -> None:
        """Read what the workers wrote within `timeout` seconds; a worker is ready once it
        wrote `ready` (and its banner) and closed the pipe."""
        waiting = [(w, w.ready_fd) for w in self._workers.values() if w.ready_fd is not None]
        if not waiting:
            time.sleep(timeout)
            return
        with selectors.DefaultSelector() as selector:
            for worker, fd in waiting:
                selector.register(fd, selectors.EVENT_READ, worker)
            for key, _ in selector.select(timeout):
                worker = key.data
                with contextlib.suppress(BlockingIOError):
                    chunk = os.read(key.fd, 65536)
                    worker.message += chunk
                    if not chunk:  # closed: by the worker once ready, or by its exit
                        worker.is_ready = worker.message.startswith(b"ready")
                        self._close_pipe(worker)

    def _close_pipe(self, worker: _Worker) -> None:
        if worker.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.close(worker.ready_fd)
            worker.ready_fd = None

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requests += 1
        if self._stop_requests == 1:
            log.info("%s: draining %d workers", signal.Signals(signum).name, len(self._workers))
            self._terminate_all()
            return
        for worker in [*self._workers.values(), *self._others]:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
        raise ForcedExit

    def _terminate_all(self) -> None:
        for worker in [*self._workers.values(), *self._others]:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)

    def _wait_all_exited(self) -> None:
        for worker in [*self._workers.values(), *self._others]:
            worker.process.wait()
            self._note_exit(worker)
            self._close_pipe(worker)
        self._others.clear()

    def _note_exit(self, worker: _Worker) -> None:
        for hook in self.on_worker_exit:
            hook(worker.process.pid)


class ForcedExit(BaseException):
    """A second signal: the workers were killed; the command exits at once."""


def _shown(paths: list[str]) -> str:
    return ", ".join(_short(path) for path in paths[:3]) + (" ..." if len(paths) > 3 else "")


def _short(path: str) -> str:
    """A changed file as the user knows it: relative to the working directory if inside it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (not listen) with SO_REUSEPORT: picks port 0's number and holds it for the workers.

    A socket that does not listen never receives connections, so the kernel spreads them over
    the workers' listening sockets only.
    """
    return bind_tcp(host, port, reuse_port=True, listen=False)
