"""Endpoints: the servers one BlazeClient spreads its calls over, round-robin.

A Kubernetes Service balances connections, not calls, and one HTTP/2 connection carries every
call of a client: a client with one connection sticks to one pod. Given several addresses, or
a DNS name that resolves to several (a headless Service; looked up again every `RESOLVE_S`),
the client keeps one connection per server and takes them in turn. A server that refuses a
call, drains (GOAWAY) or cannot be reached rests (`REST_S`, doubling while it keeps failing, to
`MAX_REST_S`), and calls go to the others meanwhile.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence

from blazerpc.grpc.h2 import GracefulChannel

__all__ = ("Endpoint", "Endpoints", "parse_address")

REST_S = 1.0
MAX_REST_S = 30.0
RESOLVE_S = 30.0

MakeChannel = Callable[[str, int], GracefulChannel]


class Endpoint:
    """One server: its address, its connection, and how it has been doing."""

    __slots__ = ("channel", "failures", "host", "port", "resting_until")

    def __init__(self, host: str, port: int, channel: GracefulChannel) -> None:
        self.host, self.port, self.channel = host, port, channel
        self.failures = 0
        self.resting_until = 0.0

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Endpoints:
    """The servers of one client (see the module doc): `pick()` one for each call."""

    def __init__(
        self,
        addresses: Sequence[tuple[str, int]],
        make_channel: MakeChannel,
        *,
        resolve: tuple[str, int] | None = None,
    ) -> None:
        self._make_channel = make_channel
        self._resolve = resolve
        self._resolved_at = 0.0
        self._looking_up = asyncio.Lock()  # one lookup at a time; the others wait for it
        self._all: list[Endpoint] = [self._endpoint(host, port) for host, port in addresses]
        self._retired: list[GracefulChannel] = []
        """Connections to addresses the name no longer has, closed once their calls end."""
        self._next = 0

    def _endpoint(self, host: str, port: int) -> Endpoint:
        endpoint = Endpoint(host, port, self._make_channel(host, port))
        endpoint.channel.on_going_away = lambda: self.failed(endpoint)
        return endpoint

    @property
    def all(self) -> list[Endpoint]:
        return list(self._all)

    async def pick(self) -> Endpoint:
        """The next server in turn that is not resting; if all rest, the first to wake.

        OSError when a name resolves to no address (yet): the next pick looks it up again.
        """
        if self._resolve is not None and self._is_stale():
            async with self._looking_up:
                if self._is_stale():  # not done meanwhile by the call we waited for
                    await self._look_up(*self._resolve)
        if self._retired:
            self._close_idle_retired()
        now = time.monotonic()
        count = len(self._all)
        for step in range(count):
            endpoint = self._all[(self._next + step) % count]
            if endpoint.resting_until <= now:
                self._next = (self._next + step + 1) % count
                return endpoint
        return min(self._all, key=lambda endpoint: endpoint.resting_until)

    def failed(self, endpoint: Endpoint) -> None:
        """It refused a call, is draining or is unreachable: let it rest."""
        rest = min(MAX_REST_S, REST_S * 2**endpoint.failures)
        endpoint.failures += 1
        endpoint.resting_until = time.monotonic() + rest

    def succeeded(self, endpoint: Endpoint) -> None:
        """It answered: it is well again."""
        endpoint.failures = 0
        endpoint.resting_until = 0.0

    def _is_stale(self) -> bool:
        return not self._all or time.monotonic() - self._resolved_at >= RESOLVE_S

    async def _look_up(self, host: str, port: int) -> None:
        """The name's addresses now: new ones join, vanished ones leave (their connections
        close once their calls are over). A failed lookup keeps the servers known so far."""
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except OSError:
            if not self._all:
                raise
            found = []
        hosts = list(dict.fromkeys(str(info[4][0]) for info in found))
        if not hosts:
            if not self._all:
                raise OSError(f"{host} resolves to no address")
            self._resolved_at = time.monotonic()
            return
        known = {endpoint.host: endpoint for endpoint in self._all}
        self._all = [known.get(h) or self._endpoint(h, port) for h in hosts]
        self._retired += [known[gone].channel for gone in set(known) - set(hosts)]
        self._next %= len(self._all)
        self._resolved_at = time.monotonic()

    def _close_idle_retired(self) -> None:
        for channel in [c for c in self._retired if not c.has_calls]:
            channel.close()
            self._retired.remove(channel)

    def close(self) -> None:
        for channel in [*(endpoint.channel for endpoint in self._all), *self._retired]:
            channel.close()


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); ValueError says what to write."""
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"address {address!r}: write host:port, such as 10.0.0.7:50051 or [::1]:50051."
        )
    return host, int(port)
