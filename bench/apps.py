"""The models the benchmark serves: the same two rpcs in blazerpc, grpclib and grpcio."""

from __future__ import annotations

from collections.abc import AsyncIterator

from blazerpc import BlazeApp

app = BlazeApp()


@app.model("echo")
async def echo(text: str) -> str:
    """Unary: the smallest useful call."""
    return text


@app.model("tokens", streaming=True)
async def tokens(n: int) -> AsyncIterator[str]:
    """Server streaming: n tokens from a generator that never awaits (the unfair case)."""
    for i in range(n):
        yield f"tok{i}"
