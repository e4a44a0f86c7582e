"""The access log: one INFO line per call, made and written off the event loop.

`model shape STATUS 1.2ms [items=N] peer=host:port via=grpc id=REQUEST_ID`, on the logger
`blazerpc.access`.
The event loop only checks that the logger is on and appends the call's facts to a deque. A
writer thread wakes when lines are waiting, lets `_GATHER_S` of them gather, then writes them,
so no call waits for a line to be written and the thread wakes at most once per `_GATHER_S`,
not once per call (woken per call, it cost more server CPU than the lines themselves:
bench/hotpath.py).

How it writes: when `blaze serve`'s own handler (loglines.py) is the only one the lines reach,
the writer makes the text and hands the handler the whole batch; otherwise it makes a log
record per line, as `logging` would, for whatever handlers the application configured.

Each record keeps the time its call ended; lines keep the order in which calls ended.
`close()` writes every line before it returns, and lines still waiting when the interpreter
exits are written then.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import weakref

from grpclib.const import Status

from blazerpc.runtime.loglines import ACCESS_MARK, LogLines

__all__ = ("AccessLog", "access_log")

access_log = logging.getLogger("blazerpc.access")
"""The logger every access line goes to; INFO turns the access log on."""

_LINE = "%s %s %s %.1fms%s peer=%s via=%s id=%s"
_GATHER_S = 0.05
"""How long lines gather once the writer has woken, before it writes them."""
_Fields = tuple[float, str, str, Status, float, int | None, str | None, str, str]
"""The call's end (time.time()), then what the line says, as the event loop had it."""


class AccessLog:
    """Gathers one line per finished call for a writer thread, started at the first line."""

    def __init__(self) -> None:
        self._writer = _Writer()
        weakref.finalize(self, self._writer.stop)  # a server never closed still writes its lines

    @property
    def is_enabled(self) -> bool:
        """Whether lines are wanted: the logger's level, as the application configured it."""
        return access_log.isEnabledFor(logging.INFO)

    def call_ended(
        self,
        model: str,
        shape: str,
        status: Status,
        duration_s: float,
        items: int | None,
        peer: str | None,
        transport: str,
        request_id: str,
    ) -> None:
        """Add the line of one call; `items` is the count of a server stream's items.

        Only what the loop has at hand is kept here; the writer makes the text.
        """
        fields = (time.time(), model, shape, status, duration_s, items, peer, transport, request_id)
        self._writer.add(fields)

    def close(self) -> None:
        """Write every line gathered so far, then stop the writer thread."""
        self._writer.stop()


class _Writer:
    """The thread that turns gathered lines into log records; it needs no event loop."""

    def __init__(self) -> None:
        self._lines: collections.deque[_Fields] = collections.deque()
        self._waiting = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._is_running = False
        self._is_stopping = False

    def add(self, fields: _Fields) -> None:
        self._lines.append(fields)  # deque.append is atomic: no lock on the event loop
        if not self._is_running:
            self._start()
        if not self._waiting.is_set():
            self._waiting.set()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._is_stopping = True
            self._waiting.set()
        thread.join()
        self._is_stopping = False
        self._write_waiting()  # anything added while the thread was finishing

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="blazerpc.access", daemon=True)
            self._is_running = True
            self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                self._waiting.wait()
                if not self._is_stopping:
                    time.sleep(_GATHER_S)  # let a batch gather: one wake-up for many calls
                self._waiting.clear()
                self._write_waiting()
                if self._is_stopping:
                    return
        finally:
            self._is_running = False  # the next line starts a writer again

    def _write_waiting(self) -> None:
        lines = self._lines
        if not lines:
            return
        batch = []
        while lines:  # popleft, not a swap of deques: the event loop may be appending
            batch.append(lines.popleft())
        handler = _only_handler()
        if handler is not None and handler.is_json:
            name = access_log.name
            handler.write_lines(
                [f"{handler.json_line(f[0], logging.INFO, name, _document(f))}\n" for f in batch]
            )
            return
        if handler is not None:
            prefix = handler.prefix(logging.INFO, access_log.name)
            handler.write_lines([f"{prefix}{_LINE % _arguments(fields)}\n" for fields in batch])
            return
        for fields in batch:
            ended = fields[0]
            record = access_log.makeRecord(
                access_log.name,
                logging.INFO,
                __file__,
                0,
                _LINE,
                _arguments(fields),
                None,
                extra={**_document(fields), ACCESS_MARK: True},
            )
            record.relativeCreated += (ended - record.created) * 1e3
            record.created, record.msecs = ended, (ended % 1) * 1e3
            access_log.handle(record)


def _arguments(fields: _Fields) -> tuple[object, ...]:
    """The values of `_LINE` for one call's facts."""
    _, model, shape, status, duration_s, items, peer, transport, rid = fields
    counted = "" if items is None else f" items={items}"
    return (model, shape, status.name, duration_s * 1e3, counted, peer or "-", transport, rid)


def _document(fields: _Fields) -> dict[str, object]:
    """One call's facts by name (loglines.ACCESS_FIELDS): a JSON line's, a record's attributes."""
    _, model, shape, status, duration_s, items, peer, transport, rid = fields
    document: dict[str, object] = {
        "model": model,
        "shape": shape,
        "status": status.name,
        "duration_ms": round(duration_s * 1e3, 3),
    }
    if items is not None:
        document["items"] = items
    return document | {"peer": peer, "transport": transport, "request_id": rid}


def _only_handler() -> LogLines | None:
    """`blaze serve`'s handler, if the access lines reach it alone and it formats as made.

    Then writing the text directly gives the very lines logging would, without a record each.
    """
    if access_log.filters or logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    found: list[logging.Handler] = []
    logger: logging.Logger | None = access_log
    while logger is not None:
        found += logger.handlers
        logger = logger.parent if logger.propagate else None
    handler = found[0] if len(found) == 1 else None
    if isinstance(handler, LogLines) and handler.formats_as_made(logging.INFO):
        return handler
    return None
