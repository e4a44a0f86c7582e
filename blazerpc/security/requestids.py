"""Request ids: every call has one, so a caller's error can be found in the server's log.

Taken from the caller's `x-request-id` when it sends a usable one (what a proxy or a tracing
system set), else made: 16 random hex digits. The server returns it in the response's
metadata or headers, writes it in the access log, and names it in an INTERNAL error.
"""

from __future__ import annotations

import random
import re

__all__ = ("REQUEST_ID", "request_id")

REQUEST_ID = "x-request-id"
"""The metadata key (gRPC) and header (HTTP) that carries it, both ways."""

_USABLE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
"""What a caller's id may hold: it is echoed in headers and log lines, so no spaces, no
control characters, at most 128 characters."""


def request_id(given: str | None) -> str:
    """The caller's id if it is usable, else a new one.

    New ids come from `random` (seeded from the OS per process), not `os.urandom`: an id must
    be unique, not secret, and a system call per call costs more than the rest of this.
    """
    if given is not None and _USABLE.fullmatch(given):
        return given
    return f"{random.getrandbits(64):016x}"
