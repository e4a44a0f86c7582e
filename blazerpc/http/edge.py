"""The HTTP/1.1 connection: uvicorn's httptools protocol, with bounds on a request's head.

uvicorn's httptools protocol reads headers of any size, for as long as they take: four
requests with a 16 MiB header were answered 200 and cost 156 MB, and a connection that never
finishes its head is held forever. This protocol counts the bytes of each request's head (the
request line and headers) as they arrive; past `max_header_bytes` it answers 431 with a JSON
error in the shape of the route family, closes the connection, and parses nothing more. A head
that has not arrived in full `header_timeout` seconds after the connection opened (or after
its first byte, for the next request on a kept-alive connection) is answered 408 the same way;
a connection that sent nothing by then is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from blazerpc.http.answer import route_error_body, status_of_http

__all__ = ("bounded_http_protocol",)

_END_OF_HEAD = b"\r\n\r\n"
_REQUEST_LINE_BYTES = 2048


def bounded_http_protocol(
    max_header_bytes: int, header_timeout: float = 0.0
) -> type[HttpToolsProtocol]:
    """uvicorn's `http=` protocol class, refusing a request head over `max_header_bytes`, or
    slower than `header_timeout` seconds (0: no time limit)."""

    class BoundedHttpToolsProtocol(_BoundedHead):
        limit = max_header_bytes
        timeout_s = header_timeout

    return BoundedHttpToolsProtocol


class _BoundedHead(HttpToolsProtocol):
    limit = 0
    timeout_s = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._tail = b""  # the last bytes seen, for an end of head split across reads
        self._start = b""  # the head's first bytes: its request line names the path
        self._is_refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._time_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _time_head(self) -> None:
        if self.timeout_s:
            self._head_timer = asyncio.get_running_loop().call_later(
                self.timeout_s, self._head_too_slow
            )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _is_answering(self) -> bool:
        """A response is still going out: a pipelined head waits for it, untimed."""
        return self.cycle is not None and not self.cycle.response_complete

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_head and self._start and self._head_timer is None:
            self._time_head()  # a pipelined head began while the response went out

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._is_refused or self.transport.is_closing() or self._is_answering():
            return
        if not self._start:  # not a byte: nothing to answer
            self._is_refused = True
            self.transport.close()
            return
        self._refuse(
            408,
            b"Request Timeout",
            f"the request's headers did not arrive in full within {self.timeout_s:g} s "
            "(header_timeout); send the whole head at once.",
        )

    def data_received(self, data: bytes) -> None:
        if self._is_refused:
            return
        if self._in_head:
            if not self._start and self._head_timer is None and not self._is_answering():
                self._time_head()  # the next request on a kept-alive connection begins
            if len(self._start) < _REQUEST_LINE_BYTES:
                self._start += data[: _REQUEST_LINE_BYTES - len(self._start)]
            window = self._tail + data
            end = window.find(_END_OF_HEAD)
            if end < 0:
                self._head_bytes += len(data)
                self._tail = window[-(len(_END_OF_HEAD) - 1) :]
            else:
                self._head_bytes += max(0, end + len(_END_OF_HEAD) - len(self._tail))
            if self._head_bytes > self.limit:
                self._refuse(
                    431,
                    b"Request Header Fields Too Large",
                    f"the request's headers are over {self.limit} bytes, the server's limit "
                    "(max_header_bytes); send less in headers.",
                )
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._tail, self._start = True, 0, b"", b""

    def _refuse(self, code: int, reason: bytes, message: str) -> None:
        """Answer `code` as JSON, then close: what else the client sends is never parsed."""
        self._is_refused = True
        self._stop_head_timer()
        request_line = self._start.split(b"\r\n", 1)[0].split(b" ")
        target = request_line[1] if len(request_line) > 1 else b"/"
        path = target.split(b"?", 1)[0].decode("latin-1")
        body = route_error_body(path, status_of_http(code), message)
        head = (
            b"HTTP/1.1 %d %s\r\n" % (code, reason) + b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()
