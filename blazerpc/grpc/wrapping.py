"""Every handler of a server's services, wrapped: how API keys and request inflation reach
every method (a service added later is covered without a change there)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from grpclib.const import Handler

from blazerpc.grpc.h2 import IServable

__all__ = ("wrapped",)


def wrapped(
    services: Sequence[IServable], wrap: Callable[[str, Handler], Handler]
) -> list[IServable]:
    """`services`, each handler replaced by `wrap(path, handler)`, once, here."""
    return [_Wrapped(service, wrap) for service in services]


class _Wrapped:
    def __init__(self, service: IServable, wrap: Callable[[str, Handler], Handler]) -> None:
        self._mapping = {path: wrap(path, h) for path, h in service.__mapping__().items()}

    def __mapping__(self) -> dict[str, Handler]:
        return self._mapping
