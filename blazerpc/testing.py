"""serve_app(app): a real server on 127.0.0.1 port 0 and a client connected to it, for tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from blazerpc.app import BlazeApp
from blazerpc.client import BlazeClient
from blazerpc.server import BlazeServer

__all__ = ("serve_app",)


@contextlib.asynccontextmanager
async def serve_app(app: BlazeApp, *, timeout: float = 10.0) -> AsyncIterator[BlazeClient]:
    """Serve `app` for the duration of the block; the client's calls have a `timeout` deadline.

    ```python
    async with serve_app(app) as client:
        assert await client.predict("add", a=1, b=2) == 3
    ```
    """
    async with (
        BlazeServer(app, host="127.0.0.1", port=0) as server,
        BlazeClient("127.0.0.1", server.port, app=app, timeout=timeout) as client,
    ):
        yield client
