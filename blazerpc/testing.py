"""serve_app(app): a real server on 127.0.0.1 port 0 and a client connected to it, for tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from blazerpc.app import BlazeApp
from blazerpc.client import BlazeClient
from blazerpc.config import ServerConfig
from blazerpc.server import BlazeServer

__all__ = ("serve_app",)


@contextlib.asynccontextmanager
async def serve_app(
    app: BlazeApp,
    *,
    timeout: float = 10.0,
    config: ServerConfig | None = None,
    **client_options: Any,
) -> AsyncIterator[BlazeClient]:
    """Serve `app` for the duration of the block; the client's calls have a `timeout` deadline.

    ```python
    async with serve_app(app) as client:
        assert await client.predict("add", a=1, b=2) == 3
    ```

    `config` sets the server's options (its host and port are always 127.0.0.1 and a free
    port); `client_options` are BlazeClient's, such as `tls_ca=` and `api_key=`.
    """
    config = (config or ServerConfig()).replace(host="127.0.0.1", port=0)
    async with (
        BlazeServer(app, config) as server,
        BlazeClient("127.0.0.1", server.port, app=app, timeout=timeout, **client_options) as client,
    ):
        yield client
