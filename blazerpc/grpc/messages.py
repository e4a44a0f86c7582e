"""A gRPC call's messages on the wire: the 5-byte prefix, the size limit, compression, and how
long a started message may stall.

Compressed requests (`grpc-encoding` gzip or deflate) are always accepted; the size limit is
the inflated size, checked while inflating, so a small message that would inflate past it is
refused without being inflated whole. Responses are compressed when the server is configured
to (`response_compression`) and the caller accepts it (`grpc-accept-encoding`), message by
message, and only when gzip makes the message smaller (as grpc-core does).
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from grpclib.const import Handler
from grpclib.exceptions import GRPCError

from blazerpc.errors import BlazeError, StalledError, UnsupportedCallError, WireError, to_status
from blazerpc.grpc.h2 import (
    IServable,
    ReadStalled,
    RequestReader,
    decode_request,
    request_reader,
    send_encoded,
)
from blazerpc.grpc.wrapping import wrapped
from blazerpc.runtime.boundary import Limits

__all__ = (
    "ACCEPTED_ENCODINGS",
    "inflating",
    "receive_message",
    "response_encoding",
    "send_compressed",
)

_PREFIX = struct.Struct(">?I")
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""zlib's window bits for each gRPC encoding: gzip's header, or zlib's (gRPC's "deflate")."""
ACCEPTED_ENCODINGS = ("gzip", "deflate", "identity")
"""The request encodings the server inflates."""
_INFLATE_STEP = 256 * 1024
"""Bytes inflated between two turns of the event loop (about half a millisecond)."""
_DEFLATE_IN_THREAD = 256 * 1024
"""Responses this large are compressed in a worker thread."""


async def receive_message(
    reader: RequestReader, limits: Limits, *, started: bool = False
) -> bytes | None:
    """The next message, inflated, or None at the end; one over the limit is never read whole.

    grpclib's own recv_message() buffers whatever length the peer declares, so this reads the
    5-byte gRPC prefix itself, from grpclib's HTTP/2 stream (through the door, h2.py).
    `started`: the message is due now (a unary call's only one), not after a gap.
    """
    prefix = b""
    try:
        reader.in_message = started
        prefix = await reader.read(5)
        if not prefix:
            return None
        if len(prefix) != 5:
            raise WireError("the request ended inside a message's 5-byte length prefix.")
        is_compressed, length = _PREFIX.unpack(prefix)
        if length > limits.max_request_bytes:
            raise limits.request_too_large(length)
        reader.in_message = True
        data = await reader.read(length)
        reader.in_message = False
    except ReadStalled as stall:
        timeout = f"{limits.message_timeout:g} s (message_timeout)"
        if not prefix and not stall.got:
            raise StalledError(
                f"the call's request message did not come within {timeout} of its headers."
            ) from None
        raise StalledError(
            f"the request message stopped arriving: nothing came for {timeout} in the middle "
            "of it. Send each message whole, without pauses."
        ) from None
    if len(data) != length:
        raise WireError(f"the request ended after {len(data)} of its {length} declared bytes.")
    if is_compressed:
        return await _inflated(data, reader.header("grpc-encoding"), limits)
    return data


async def _inflated(data: bytes, encoding: str | None, limits: Limits) -> bytes:
    if encoding is None or encoding == "identity":
        raise WireError(
            "a request message is flagged compressed, but the call names no grpc-encoding: "
            "send grpc-encoding: gzip (or deflate) with it, or send it uncompressed."
        )
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise UnsupportedCallError(
            f"the request is compressed with {encoding!r}, which this server does not inflate; "
            f"it accepts {', '.join(ACCEPTED_ENCODINGS)}."
        )
    inflater = zlib.decompressobj(wbits)
    limit = limits.max_request_bytes
    inflated = bytearray()
    pending = data
    try:
        while True:  # in steps, never more than one byte past the limit, the loop free between
            room = min(_INFLATE_STEP, limit + 1 - len(inflated))
            inflated += inflater.decompress(pending, room)
            if len(inflated) > limit:
                raise limits.request_too_large(len(inflated), inflated=True)
            pending = inflater.unconsumed_tail
            if not pending or inflater.eof:
                break
            await asyncio.sleep(0)
    except zlib.error as err:
        raise WireError(
            f"a request message could not be inflated with {encoding} ({err})."
        ) from None
    if not inflater.eof:
        raise WireError(f"a request message is cut short: its {encoding} stream does not end.")
    if inflater.unused_data:
        raise WireError(
            f"a request message has bytes after its {encoding} stream (a second gzip member?); "
            "compress each message as one stream."
        )
    return bytes(inflated)


def response_encoding(reader: RequestReader, compression: str) -> str | None:
    """The encoding of a call's responses: the server's `response_compression` when the caller
    accepts it (`grpc-accept-encoding`), else None (sent as they are)."""
    if compression == "off":
        return None
    accepted = reader.header("grpc-accept-encoding")
    return compression if accepted is not None and compression in _tokens(accepted) else None


async def send_compressed(stream: Any, data: bytes, encoding: str) -> None:
    """Send one response message of a call whose responses use `encoding`, compressed when
    that makes it smaller."""
    wbits = _WBITS[encoding]
    if len(data) < _DEFLATE_IN_THREAD:
        packed = _deflated(data, wbits)
    else:  # zlib lets go of the GIL: a large message does not stall the other calls
        packed = await asyncio.to_thread(_deflated, data, wbits)
    if len(packed) < len(data):
        await send_encoded(stream, packed, encoding, is_compressed=True)
    else:  # the flag says "not compressed"; the headers name the encoding all the same
        await send_encoded(stream, data, encoding, is_compressed=False)


def _deflated(data: bytes, wbits: int) -> bytes:
    deflater = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return deflater.compress(data) + deflater.flush()


def _tokens(header: str) -> set[str]:
    return {token.strip() for token in header.split(",")}


def inflating(services: Sequence[IServable], limits: Limits) -> list[IServable]:
    """`services` whose handlers read requests with grpclib's `recv_message` (health,
    reflection, the Open Inference probes), reading them as the models' calls do: compressed
    or not, within the size limit and message_timeout. grpclib's own fails a compressed one
    with UNKNOWN."""
    return wrapped(services, lambda path, handler: _inflating(path, handler, limits))


def _inflating(path: str, handler: Handler, limits: Limits) -> Handler:
    function: Callable[[Any], Awaitable[None]] = handler.func
    is_single = not handler.cardinality.client_streaming

    async def inflating(stream: Any) -> None:
        reader = request_reader(stream)
        is_due = is_single

        async def recv_message() -> Any:
            nonlocal is_due
            started, is_due = is_due, False
            try:
                data = await receive_message(reader, limits, started=started)
            except BlazeError as error:
                raise GRPCError(*to_status(error, "", service=path)) from None
            return None if data is None else decode_request(stream, data)

        stream.recv_message = recv_message
        await function(stream)

    return Handler(inflating, handler.cardinality, handler.request_type, handler.reply_type)
