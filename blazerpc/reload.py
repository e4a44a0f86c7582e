"""`blaze serve --reload`: watch the app's source files and say when they changed.

The watching is watchfiles' (inotify on Linux, a well-kept Rust watcher), in a thread of the
parent process, which loads no model; the Supervisor (workers.py) does the restart: it
starts a new set of workers beside the old ones, and only once every new worker serves does
it drain the old ones, so no call is lost and a change that fails to import leaves the last
good version serving. watchfiles is the `reload` extra.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from blazerpc.errors import BlazeError

__all__ = ("ReloadUnavailableError", "SourceWatcher")

DEBOUNCE_MS = 300
"""Changes within this long of each other are one reload (an editor's save writes twice)."""


class ReloadUnavailableError(BlazeError):
    """`--reload` was asked for without watchfiles installed."""


class SourceWatcher:
    """Watches directories for changed Python files, in a background thread."""

    def __init__(self, roots: list[Path]) -> None:
        try:
            import watchfiles
        except ImportError:
            raise ReloadUnavailableError(
                "blaze serve --reload needs watchfiles: pip install 'blazerpc[reload]'."
            ) from None
        self.roots = roots
        self._watchfiles: Any = watchfiles
        self._changes: queue.SimpleQueue[set[str]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="blazerpc-reload", daemon=True)

    def start(self) -> None:
        """Start watching; returns once the watcher is in place, so no edit is missed."""
        self._thread.start()
        self._ready.wait(5.0)

    def _watch(self) -> None:
        watch = self._watchfiles.watch(
            *self.roots,
            watch_filter=self._watchfiles.PythonFilter(),
            debounce=DEBOUNCE_MS,
            step=50,
            stop_event=self._stop,
            yield_on_timeout=True,
            rust_timeout=100,
            raise_interrupt=False,
        )
        for changes in watch:
            self._ready.set()  # the first (empty) yield comes once the watch is in place
            if changes:
                self._changes.put({path for _, path in changes})

    def changed(self) -> list[str]:
        """The files that changed since the last call, sorted; empty when none did."""
        paths: set[str] = set()
        while not self._changes.empty():
            paths |= self._changes.get_nowait()
        return sorted(paths)

    def close(self) -> None:
        """Stop watching (the thread ends within a tenth of a second)."""
        self._stop.set()
