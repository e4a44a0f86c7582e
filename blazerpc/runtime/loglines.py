"""`blaze serve`'s log handler: plain lines on a stream, access lines a batch per write.

`LogLines` writes every record as `LEVEL [pid] logger: message`, or with `json=True` as one
JSON object a line (`--log-format json`, for log collectors): `time`, `level`, `logger`, `pid`
with `--workers`, then `message` (and `exception`), or an access line's own fields.

The access log's writer thread (accesslog.py) gives it a batch of access lines already made,
when it is the only handler they would reach and it still formats as it was made to: then no
LogRecord is made or formatted for an access line (about 4 us of the server's CPU per call:
bench/hotpath.py). Each write holds whole lines and at most PIPE_BUF bytes, so the lines of
`--workers` processes sharing one pipe never interleave mid-line.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from typing import Any, TextIO

import msgspec

__all__ = ("ACCESS_FIELDS", "ACCESS_MARK", "LogLines")

_PIPE_BUF = 4096
"""The largest write a pipe keeps whole (POSIX guarantees 512; Linux gives 4096)."""


ACCESS_MARK = "blazerpc_access"
"""The attribute (True) that marks an access record, whose fields a JSON line shows."""

ACCESS_FIELDS = (
    "model",
    "shape",
    "status",
    "duration_ms",
    "items",
    "peer",
    "transport",
    "request_id",
)
"""The fields an access record carries as attributes: a JSON line shows them one by one."""


class LogLines(logging.StreamHandler):  # type: ignore[type-arg]  # generic in typeshed only
    """Log lines on a stream; `show_process` names the process (`--workers`) in each line."""

    def __init__(self, stream: TextIO, *, show_process: bool = False, json: bool = False) -> None:
        super().__init__(stream)
        self._show_process = show_process
        self.is_json = json
        """Whether lines are JSON objects rather than text."""
        process = "[%(process)d] " if show_process else ""
        self._own_formatter: logging.Formatter = (
            _JsonFormatter(self)
            if json
            else logging.Formatter(f"%(levelname)s {process}%(name)s: %(message)s")
        )
        self.setFormatter(self._own_formatter)

    def json_line(self, created: float, level: int, logger: str, fields: dict[str, Any]) -> str:
        """One JSON line (no newline): when, how severe, whose, then `fields`."""
        head: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": logging.getLevelName(level),
            "logger": logger,
        }
        if self._show_process:
            head["pid"] = os.getpid()
        return msgspec.json.encode(head | fields).decode()

    def formats_as_made(self, level: int) -> bool:
        """Whether a record at `level` would pass this handler as made: own format, no filter."""
        return self.formatter is self._own_formatter and not self.filters and self.level <= level

    def prefix(self, level: int, logger: str) -> str:
        """What this handler writes before the message of a record at `level` from `logger`."""
        process = f"[{os.getpid()}] " if self._show_process else ""
        return f"{logging.getLevelName(level)} {process}{logger}: "

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write finished lines (each ending in a newline), whole, at most PIPE_BUF per write.

        A failed write is reported the way logging reports a handler's failure; the lines of
        that write are lost and the log goes on.
        """
        chunk: list[str] = []
        size = 0
        for line in lines:
            length = len(line.encode())
            if chunk and size + length > _PIPE_BUF:
                self._write(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += length
        if chunk:
            self._write(chunk)

    def _write(self, chunk: list[str]) -> None:
        self.acquire()
        try:
            self.stream.write("".join(chunk))
            self.stream.flush()
        except Exception:
            self.handleError(
                logging.LogRecord(
                    "blazerpc.access", logging.INFO, __file__, 0, chunk[0], None, None
                )
            )
        finally:
            self.release()


class _JsonFormatter(logging.Formatter):
    """A record as one JSON object: its message, or an access record's fields."""

    def __init__(self, handler: LogLines) -> None:
        super().__init__()
        self._handler = handler

    def format(self, record: logging.LogRecord) -> str:
        found = record.__dict__
        fields = {}
        if found.get(ACCESS_MARK):  # not any record whose `extra` happens to share a name
            fields = {name: found[name] for name in ACCESS_FIELDS if name in found}
        if not fields:
            fields = {"message": record.getMessage()}
            if record.exc_info:
                fields["exception"] = self.formatException(record.exc_info)
        return self._handler.json_line(record.created, record.levelno, record.name, fields)
