"""`blaze serve`'s log handler: plain lines on a stream, access lines a batch per write.

`LogLines` writes every record as `LEVEL [pid] logger: message`. The access log's writer
thread (accesslog.py) gives it a batch of access lines already made, when it is the only
handler they would reach and it still formats as it was made to: then no LogRecord is made or
formatted for an access line (about 4 us of the server's CPU per call: bench/hotpath.py).
Each write holds whole lines and at most PIPE_BUF bytes, so the lines of `--workers`
processes sharing one pipe never interleave mid-line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TextIO

__all__ = ("LogLines",)

_PIPE_BUF = 4096
"""The largest write a pipe keeps whole (POSIX guarantees 512; Linux gives 4096)."""


class LogLines(logging.StreamHandler):  # type: ignore[type-arg]  # generic in typeshed only
    """Log lines on a stream; `show_process` starts each with the process id (`--workers`)."""

    def __init__(self, stream: TextIO, *, show_process: bool = False) -> None:
        super().__init__(stream)
        self._show_process = show_process
        process = "[%(process)d] " if show_process else ""
        self._own_formatter = logging.Formatter(f"%(levelname)s {process}%(name)s: %(message)s")
        self.setFormatter(self._own_formatter)

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
