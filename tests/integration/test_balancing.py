"""A BlazeClient over several servers: calls spread round-robin, a draining or loading server
is left for the others, and only a call the server refused before running it is sent again."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import blazerpc.remote.endpoints as endpoints
from blazerpc import BlazeApp, BlazeClient, BlazeServer, ModelError, RpcError, Status

from .support import WAIT_S, free_port, wait_until

pytestmark = pytest.mark.anyio


def tagged_app(tag: str, ran: Counter[str], loaded: asyncio.Event | None = None) -> BlazeApp:
    """An app whose `which` answers its server's tag; `flaky` fails UNAVAILABLE itself."""
    app = BlazeApp()

    if loaded is not None:

        @app.lifespan
        async def weights() -> AsyncIterator[None]:
            await loaded.wait()
            yield

    @app.model("which")
    async def which(pause: float) -> str:
        ran[tag] += 1
        await asyncio.sleep(pause)
        return tag

    @app.model("flaky")
    async def flaky() -> str:
        ran[f"flaky-{tag}"] += 1
        raise ModelError(Status.UNAVAILABLE, "the GPU is busy")

    @app.model("count", streaming=True)
    async def count(n: int) -> AsyncIterator[str]:
        for _ in range(n):
            yield tag

    return app


@contextlib.asynccontextmanager
async def client_over_a_and_b(ran: Counter[str]) -> AsyncIterator[BlazeClient]:
    """A client over two servers of `tagged_app`, tagged a and b."""
    async with (
        BlazeServer(tagged_app("a", ran), port=0) as a,
        BlazeServer(tagged_app("b", ran), port=0) as b,
    ):
        addresses = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
        async with BlazeClient(addresses=addresses, timeout=WAIT_S) as client:
            yield client


async def test_calls_spread_round_robin_over_the_addresses() -> None:
    ran: Counter[str] = Counter()
    async with client_over_a_and_b(ran) as client:
        answers = [await client.predict("which", pause=0) for _ in range(10)]
        streams = [[t async for t in client.stream("count", n=2)] for _ in range(2)]
    assert answers == answers[:2] * 5  # in turn
    assert sorted(answers[:2]) == ["a", "b"]
    assert sorted(s[0] for s in streams) == ["a", "b"]


async def test_no_call_is_lost_while_one_server_drains() -> None:
    ran: Counter[str] = Counter()
    answers: list[str] = []
    failures: list[RpcError] = []
    async with BlazeServer(tagged_app("b", ran), port=0) as b:
        a = BlazeServer(tagged_app("a", ran), port=0)
        await a.start()
        addresses = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
        async with BlazeClient(addresses=addresses, timeout=WAIT_S) as client:
            stop = asyncio.Event()

            async def caller() -> None:
                while not stop.is_set():
                    try:
                        answers.append(await client.predict("which", pause=0.01))
                    except RpcError as error:
                        failures.append(error)

            with anyio.fail_after(WAIT_S * 3):
                async with anyio.create_task_group() as callers:
                    for _ in range(8):
                        callers.start_soon(caller)
                    await wait_until(lambda: ran["a"] >= 20, "both servers serve")
                    await a.drain(WAIT_S)  # mid-test: its calls finish, new ones go to b
                    served_by_a = ran["a"]
                    before = len(answers)
                    await wait_until(lambda: len(answers) >= before + 100, "b serves on")
                    stop.set()
    assert failures == []
    assert len(answers) == ran["a"] + ran["b"]  # every call ran once and was answered
    assert ran["a"] == served_by_a  # nothing reached the drained server
    assert answers[-50:] == ["b"] * 50


async def test_a_loading_server_refuses_and_the_call_goes_to_the_next() -> None:
    ran: Counter[str] = Counter()
    loaded = asyncio.Event()
    async with BlazeServer(tagged_app("b", ran), port=0) as b:
        a = BlazeServer(tagged_app("a", ran, loaded), port=0)
        starting = asyncio.ensure_future(a.start())
        try:
            while a._socket is None:  # noqa: ASYNC110 (bound, still loading: no event to wait on)
                await asyncio.sleep(0.01)
            addresses = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
            async with BlazeClient(addresses=addresses, timeout=WAIT_S) as client:
                answers = [await client.predict("which", pause=0) for _ in range(6)]
        finally:
            loaded.set()
            await starting
            await a.close()
    assert answers == ["b"] * 6  # a's refusals (loading: the model never ran) went to b
    assert ran["a"] == 0


async def test_a_failure_of_the_model_itself_is_not_sent_again() -> None:
    ran: Counter[str] = Counter()
    async with client_over_a_and_b(ran) as client:
        with pytest.raises(RpcError) as failed:
            await client.predict("flaky")
    assert (failed.value.status, failed.value.message) == (Status.UNAVAILABLE, "the GPU is busy")
    assert not failed.value.refused
    assert sum(n for key, n in ran.items() if key.startswith("flaky")) == 1  # ran once


async def test_an_unreachable_server_is_skipped_and_a_name_resolves_to_its_addresses() -> None:
    ran: Counter[str] = Counter()
    async with BlazeServer(tagged_app("b", ran), port=0) as b:
        nowhere = f"127.0.0.1:{free_port()}"
        async with BlazeClient(
            addresses=[nowhere, f"127.0.0.1:{b.port}"], timeout=WAIT_S
        ) as client:
            answers = [await client.predict("which", pause=0) for _ in range(4)]
        async with BlazeClient("localhost", b.port, resolve=True, timeout=WAIT_S) as named:
            assert await named.predict("which", pause=0) == "b"
    assert answers == ["b"] * 4


def test_addresses_are_checked_when_the_client_is_made() -> None:
    with pytest.raises(ValueError, match=r"address 'nohost': write host:port"):
        BlazeClient(addresses=["nohost"])
    with pytest.raises(ValueError, match="give addresses= or resolve=True, not both"):
        BlazeClient("svc", 50051, addresses=["a:1"], resolve=True)


def fake_resolver(monkeypatch: pytest.MonkeyPatch, answers: list[list[str]]) -> list[str]:
    """The loop's getaddrinfo answering each lookup of a name with the next list of addresses
    (the last repeats): a headless Service whose pods come and go. Returns the lookups made."""
    looked_up: list[str] = []
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: int, **_: object) -> list[Any]:
        looked_up.append(host)
        ips = answers[min(len(looked_up), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return looked_up


async def test_a_name_that_does_not_resolve_yet_is_looked_up_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: Counter[str] = Counter()
    async with BlazeServer(tagged_app("a", ran), port=0) as a:
        looked_up = fake_resolver(monkeypatch, [[], [], ["127.0.0.1"]])
        async with BlazeClient("svc", a.port, resolve=True, timeout=WAIT_S) as client:
            # no address yet (the Service's DNS not ready): refused, looked up again, answered
            assert await client.predict("which", pause=0) == "a"
            together = await asyncio.gather(*(client.predict("which", pause=0) for _ in range(3)))
    assert together == ["a"] * 3
    assert len(looked_up) == 3


async def test_an_address_that_leaves_the_name_keeps_its_running_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: Counter[str] = Counter()
    monkeypatch.setattr(endpoints, "RESOLVE_S", 0.0)  # look the name up before every call
    async with (
        BlazeServer(tagged_app("a", ran), host="127.0.0.1", port=0) as a,
        BlazeServer(tagged_app("b", ran), host="127.0.0.2", port=a.port),
    ):
        both, only_b = ["127.0.0.1", "127.0.0.2"], ["127.0.0.2"]
        answers = [both, both, both, only_b]
        fake_resolver(monkeypatch, answers)
        app = tagged_app("a", ran)
        async with BlazeClient("svc", a.port, resolve=True, app=app, timeout=WAIT_S) as client:
            assert [await client.predict("which", pause=0) for _ in range(2)] == ["a", "b"]
            long_call = asyncio.ensure_future(client.predict("which", pause=0.5))
            await wait_until(lambda: ran["a"] == 2, "the long call runs on a")
            assert await client.predict("which", pause=0) == "b"  # a has left the name
            assert await long_call == "a"  # and its call still finished there


async def test_looking_a_name_up_stays_within_the_calls_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cancelled = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def hanging(host: str, port: int, **_: object) -> list[Any]:
        try:
            await asyncio.Event().wait()  # a resolver that never answers
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    monkeypatch.setattr(loop, "getaddrinfo", hanging)
    with anyio.fail_after(WAIT_S):  # a bound on the test, far beyond the call's deadline
        app = tagged_app("a", Counter())
        async with BlazeClient("svc", free_port(), resolve=True, app=app, timeout=0.2) as client:
            with pytest.raises(RpcError) as failed:
                await client.predict("which", pause=0)
    assert failed.value.status is Status.DEADLINE_EXCEEDED
    assert cancelled.is_set()
