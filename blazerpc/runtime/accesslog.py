"""The access log: one INFO line per call, made and written off the event loop.

`model shape STATUS 1.2ms [items=N] peer=host:port via=grpc`, on the logger `blazerpc.access`.
The event loop only checks that the logger is on and appends the call's facts to a batch; every
`_BATCH_S` the batch goes to a thread of the server's, which makes the log records and runs the
handlers, then flushes them once. So no call waits for a line to be written, the thread wakes
once per batch (woken per call, it cost more server CPU than the lines themselves), and the
handler `blaze serve` sets up writes a whole batch in one system call (bench/hotpath.py).
Lines keep the order in which calls ended, at most `_BATCH_S` late, and `close()` writes
every line before it returns.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading

__all__ = ("AccessLog", "access_log")

access_log = logging.getLogger("blazerpc.access")
"""The logger every access line goes to; INFO turns the access log on."""

_LINE = "%s %s %s %.1fms%s peer=%s via=%s"
_BATCH_S = 0.05
"""How long lines gather on the event loop before the writer thread takes them."""
_Fields = tuple[str, str, str, float, str, str, str]


class AccessLog:
    """Gathers one line per finished call; a writer thread, started at the first, logs them."""

    def __init__(self) -> None:
        self._batch: list[_Fields] = []
        self._handover: asyncio.TimerHandle | None = None
        self._queue: queue.SimpleQueue[list[_Fields] | None] = queue.SimpleQueue()
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
        """Add the line of one call; `items` is the count of a server stream's items."""
        counted = "" if items is None else f" items={items}"
        self._batch.append(
            (model, shape, status, duration_s * 1e3, counted, peer or "-", transport)
        )
        if self._handover is None:
            self._handover = asyncio.get_running_loop().call_later(_BATCH_S, self._hand_over)

    def close(self) -> None:
        """Write every line gathered so far, then stop the writer thread."""
        if self._handover is not None:
            self._handover.cancel()
        self._hand_over()
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None

    def _hand_over(self) -> None:
        self._handover = None
        if not self._batch:
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name="blazerpc.access", daemon=True)
            self._writer.start()
        self._queue.put(self._batch)
        self._batch = []

    def _write(self) -> None:
        while (batch := self._queue.get()) is not None:
            for fields in batch:
                record = access_log.makeRecord(
                    access_log.name, logging.INFO, __file__, 0, _LINE, fields, None
                )
                access_log.handle(record)
            _flush_handlers()


def _flush_handlers() -> None:
    """Flush every handler a line reaches, once per batch.

    A handler that writes each record at once flushes for nothing; one that gathers lines
    (`blaze serve`'s) writes the whole batch in one system call here.
    """
    logger: logging.Logger | None = access_log
    while logger is not None:
        for handler in logger.handlers:
            handler.flush()
        logger = logger.parent if logger.propagate else None
