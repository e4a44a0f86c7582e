"""The access log: one INFO line per call, made and written off the event loop.

`model shape STATUS 1.2ms [items=N] peer=host:port via=grpc`, on the logger `blazerpc.access`.
The event loop only checks that the logger is on and queues the call's facts (about 0.05 us);
a thread of the server's makes the log record and runs the handlers (about 6 us a line with the
handler `blaze serve` sets up), so no call waits for another call's line to be written. Lines
keep the order in which calls ended, and `close()` writes every queued line before it returns.
"""

from __future__ import annotations

import logging
import queue
import threading

__all__ = ("AccessLog", "access_log")

access_log = logging.getLogger("blazerpc.access")
"""The logger every access line goes to; INFO turns the access log on."""

_LINE = "%s %s %s %.1fms%s peer=%s via=%s"
_Fields = tuple[str, str, str, float, str, str, str]


class AccessLog:
    """Queues one line per finished call; a writer thread, started at the first, logs them."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Fields | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    @property
    def is_enabled(self) -> bool:
        """Whether lines are wanted: the logger's level, as the application configured it."""
        return access_log.isEnabledFor(logging.INFO)

    def call_ended(
        self,
        model: str,
        shape: str,
        status: str,
        duration_s: float,
        items: int | None,
        peer: str | None,
        transport: str,
    ) -> None:
        """Queue the line of one call; `items` is the count of a server stream's items."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name="blazerpc.access", daemon=True)
            self._writer.start()
        counted = "" if items is None else f" items={items}"
        self._queue.put((model, shape, status, duration_s * 1e3, counted, peer or "-", transport))

    def close(self) -> None:
        """Write every queued line, then stop the writer thread."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None

    def _write(self) -> None:
        while (fields := self._queue.get()) is not None:
            record = access_log.makeRecord(
                access_log.name, logging.INFO, __file__, 0, _LINE, fields, None
            )
            access_log.handle(record)
