"""`blaze serve --workers 2`: two processes on one port, each streaming, restarted when they die."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import anyio
import anyio.to_thread
import httpx
import pytest

from blazerpc import BlazeClient, RpcError
from tests.apps import pids as pids_app

from .support import ServeProcess, blaze_serve, free_port

pytestmark = pytest.mark.anyio


@contextlib.contextmanager
def _two_workers(*options: str) -> Iterator[ServeProcess]:
    """`blaze serve tests/apps/pids.py:app --workers 2 ...` in a session of its own."""
    with blaze_serve(
        "tests/apps/pids.py:app", "--workers", "2", *options, new_session=True
    ) as served:
        assert served.first_line.startswith("blazerpc serving 1 models on 127.0.0.1:")
        yield served


@pytest.fixture
def two_workers() -> Iterator[ServeProcess]:
    with _two_workers() as served:
        yield served


async def _stream_pids(port: int, seen: set[int]) -> None:
    """One new connection, one stream: the worker that accepted it answers every item."""
    async with BlazeClient("127.0.0.1", port, app=pids_app.app, timeout=10) as client:
        items = [pid async for pid in client.stream("whoami", count=5)]
    assert len(items) == 5 and len(set(items)) == 1
    seen.add(items[0])


async def _until_two_workers_answered(port: int) -> set[int]:
    seen: set[int] = set()
    with anyio.fail_after(30):
        while len(seen) < 2:  # the kernel spreads new connections over both workers
            async with anyio.create_task_group() as group:
                for _ in range(4):
                    group.start_soon(_stream_pids, port, seen)
    return seen


async def test_each_worker_serves_streams_and_sigterm_exits_0(
    two_workers: ServeProcess,
) -> None:
    process, port = two_workers.process, two_workers.port
    seen = await _until_two_workers_answered(port)
    assert process.pid not in seen  # the parent only supervises
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0


async def test_a_worker_that_dies_is_restarted(two_workers: ServeProcess) -> None:
    process, port = two_workers.process, two_workers.port
    victim = min(await _until_two_workers_answered(port))
    os.kill(victim, signal.SIGKILL)
    seen: set[int] = set()
    with anyio.fail_after(30):
        while len(seen) < 2:
            try:
                await _stream_pids(port, seen)
            except RpcError:  # a connection that raced the dying worker
                await anyio.sleep(0.05)
    assert victim not in seen
    assert process.poll() is None


async def test_metrics_from_every_worker_are_summed_on_one_port() -> None:
    metrics_port = free_port()
    with _two_workers("--metrics-port", str(metrics_port)) as served:
        process, port = served.process, served.port
        seen: set[int] = set()
        streams = 0
        with anyio.fail_after(30):
            while len(seen) < 2:
                await _stream_pids(port, seen)
                streams += 1
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        expected = (
            'blazerpc_requests_total{model="whoami",shape="server_streaming",status="OK"} '
            f"{float(streams)}"
        )
        assert expected in text.splitlines()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


async def test_sigterm_to_the_whole_process_group_still_drains(
    two_workers: ServeProcess,
) -> None:
    """systemd signals every process of the group: workers get two SIGTERMs and must drain."""
    process, port = two_workers.process, two_workers.port
    async with BlazeClient("127.0.0.1", port, app=pids_app.app, timeout=20) as client:
        stream = client.stream("whoami", count=100)  # one second of items
        items = [await anext(stream)]
        os.killpg(process.pid, signal.SIGTERM)
        items += [item async for item in stream]
    assert len(items) == 100
    assert process.wait(timeout=20) == 0


async def test_workers_share_the_http_port_too() -> None:
    http_port = free_port()  # to ask for: with workers, 0 would be printed, not known
    with _two_workers("--http-port", str(http_port)) as served:
        process = served.process
        seen: set[int] = set()
        with anyio.fail_after(20):
            while len(seen) < 2:  # each new connection lands on one worker or the other
                async with httpx.AsyncClient(timeout=5) as http:
                    answer = await http.post(
                        f"http://127.0.0.1:{http_port}/models/whoami", json={"count": 1}
                    )
                seen.add(int(answer.text.split('"result":')[1].split("}")[0]))
        process.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(process.wait, 20) == 0
