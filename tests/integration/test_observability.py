"""Prometheus metrics per model and status, and one access-log line per call."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blazerpc import (
    Batching,
    BlazeApp,
    BlazeClient,
    BlazeServer,
    Continuous,
    LifespanError,
    RpcError,
    Step,
    Stop,
)
from blazerpc.runtime.loglines import LogLines

from .support import serve_http

pytestmark = pytest.mark.anyio


def _app() -> BlazeApp:
    app = BlazeApp()

    @app.model("add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.model("count", streaming=True)
    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @app.model("double", batch=Batching(max_size=8))
    async def double(x: list[float]) -> list[float]:
        return [v * 2 for v in x]

    @app.model("decode", streaming=True, batch=Continuous(max_size=4))
    async def decode(n: list[int], steps: list[Step]) -> list[int | Stop]:
        return [s.index if s.index < total else Stop() for total, s in zip(n, steps, strict=True)]

    return app


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_calls_by_model_and_status_and_time_streams() -> None:
    app = _app()
    async with (
        BlazeServer(app, port=0, metrics_port=0) as server,
        BlazeClient(port=server.port, app=app, timeout=5) as client,
    ):
        for _ in range(3):
            assert await client.predict("add", a=1, b=2) == 3
        with pytest.raises(RpcError):
            await client.predict("add", a=1)  # b is required: INVALID_ARGUMENT
        assert [i async for i in client.stream("count", n=5)] == [0, 1, 2, 3, 4]
        assert len([i async for i in client.stream("count", n=600)]) == 600  # gaps flushed twice
        assert await client.predict("double", x=1.5) == 3.0
        assert [i async for i in client.stream("decode", n=3)] == [0, 1, 2]
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{server.metrics_port}/metrics")
    samples = _samples(response.text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    requests = "blazerpc_requests_total"
    assert value(requests, model="add", shape="unary", status="OK") == 3
    assert value(requests, model="add", shape="unary", status="INVALID_ARGUMENT") == 1
    assert value(requests, model="count", shape="server_streaming", status="OK") == 2
    assert value("blazerpc_request_duration_seconds_count", model="add", status="OK") == 3
    assert value("blazerpc_stream_first_item_seconds_count", model="count") == 2
    assert value("blazerpc_stream_item_gap_seconds_count", model="count") == 4 + 599
    assert value("blazerpc_stream_item_gap_seconds_bucket", model="count", le="+Inf") == 603
    streamed = value("blazerpc_stream_first_item_seconds_sum", model="count") + value(
        "blazerpc_stream_item_gap_seconds_sum", model="count"
    )  # each stream's first item and the gaps after it happen within that stream's call
    assert (
        0 < streamed <= value("blazerpc_request_duration_seconds_sum", model="count", status="OK")
    )
    assert value("blazerpc_batch_size_count", model="double") == 1
    assert value("blazerpc_batch_size_sum", model="double") == 1
    assert value("blazerpc_batch_queue_seconds_count", model="double") == 1
    assert value("blazerpc_step_seconds_count", model="decode") == 4  # 3 values, then Stop
    assert value("blazerpc_step_streams_sum", model="decode") == 4  # one stream in each
    assert value("blazerpc_slot_wait_seconds_count", model="decode") == 1  # it joined once


async def test_two_servers_in_one_process_keep_their_own_metrics() -> None:
    app = _app()
    async with (
        BlazeServer(app, port=0, metrics_port=0) as first,
        BlazeServer(app, port=0, metrics_port=0) as second,
        BlazeClient(port=first.port, app=app, timeout=5) as client,
    ):
        await client.predict("add", a=1, b=1)
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{second.metrics_port}/metrics")).text
    assert 'model="add"' not in text


async def test_the_access_log_has_one_line_per_call(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    caplog.set_level(logging.INFO, logger="blazerpc.access")
    async with (
        BlazeServer(app, port=0) as server,
        BlazeClient(port=server.port, app=app, timeout=5) as client,
    ):
        await client.predict("add", a=1, b=2)
        with pytest.raises(RpcError):
            await client.predict("add", a=1)
        assert [i async for i in client.stream("count", n=3)] == [0, 1, 2]
    records = [r for r in caplog.records if r.name == "blazerpc.access"]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 3
    # made and written off the event loop, by the server's access-log thread
    assert {r.threadName for r in records} == {"blazerpc.access"}
    assert lines[0].startswith("add unary OK ") and "peer=127.0.0.1:" in lines[0]
    assert lines[1].startswith("add unary INVALID_ARGUMENT ")
    assert lines[2].startswith("count server_streaming OK ") and " items=3 " in lines[2]


async def test_http_calls_are_counted_and_logged_like_grpc_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _app()
    caplog.set_level(logging.INFO, logger="blazerpc.access")
    async with serve_http(app, metrics_port=0) as served:
        http = served.http
        assert (await http.post("/models/add", json={"a": 1, "b": 2})).json() == {"result": 3}
        assert (await http.post("/models/add", json={"a": 1})).status_code == 400
        streamed = await http.post("/models/count", json={"n": 3})
        assert streamed.text.count("data: {") == 4  # three items and the end event
        metrics = await http.get(f"http://127.0.0.1:{served.server.metrics_port}/metrics")
    samples = _samples(metrics.text)
    requests = "blazerpc_requests_total"
    assert samples[
        (requests, frozenset({"model": "add", "shape": "unary", "status": "OK"}.items()))
    ]
    assert (
        samples[
            (
                requests,
                frozenset({"model": "add", "shape": "unary", "status": "INVALID_ARGUMENT"}.items()),
            )
        ]
        == 1
    )
    assert (
        samples[("blazerpc_stream_first_item_seconds_count", frozenset({"model": "count"}.items()))]
        == 1
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "blazerpc.access"]
    assert lines[0].startswith("add unary OK ") and re.search(
        r" via=http id=[0-9a-f]{16}$", lines[0]
    )
    assert lines[1].startswith("add unary INVALID_ARGUMENT ")
    assert lines[2].startswith("count server_streaming OK ") and " items=3 " in lines[2]


class _FullOnce(io.StringIO):
    """A log destination that fails one write (a full disk, a pipe that hiccups), then recovers."""

    failures = 1

    def write(self, text: str) -> int:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        return super().write(text)


async def test_a_failed_write_loses_its_lines_only_and_the_log_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)  # logging's report of it, off
    destination = _FullOnce()
    handler = LogLines(destination)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("blazerpc.access")
    monkeypatch.setattr(access, "level", logging.INFO)
    access.addHandler(handler)
    app = _app()
    try:
        async with BlazeServer(app, port=0) as server:
            async with BlazeClient(port=server.port, app=app, timeout=5) as client:
                assert await client.predict("add", a=1, b=2) == 3
                await server.drain()  # the first line's batch meets the full disk
        async with BlazeServer(app, port=0) as server:
            async with BlazeClient(port=server.port, app=app, timeout=5) as client:
                assert await client.predict("add", a=3, b=4) == 7
    finally:
        access.removeHandler(handler)
    lines = destination.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("add unary OK ")


async def test_lines_are_written_when_a_lifespan_hook_fails_at_teardown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _app()

    @app.lifespan
    def flaky() -> Iterator[None]:
        yield
        raise RuntimeError("could not release the weights")

    caplog.set_level(logging.INFO, logger="blazerpc.access")
    server = BlazeServer(app, port=0)
    await server.start()
    async with BlazeClient(port=server.port, app=app, timeout=5) as client:
        assert await client.predict("add", a=1, b=2) == 3
    with pytest.raises(LifespanError, match="could not release"):
        await server.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "blazerpc.access"]
    assert len(lines) == 1 and lines[0].startswith("add unary OK ")


def test_a_server_never_closed_still_writes_its_lines_at_exit(tmp_path: Path) -> None:
    script = tmp_path / "forgets.py"
    script.write_text(NEVER_CLOSED, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "INFO:blazerpc.access:add unary OK " in done.stderr, done.stderr


NEVER_CLOSED = """\
import asyncio, logging
from blazerpc import BlazeApp, BlazeClient, BlazeServer

logging.basicConfig(level="INFO")
app = BlazeApp()

@app.model("add")
def add(a: int, b: int) -> int:
    return a + b

async def main() -> None:
    server = BlazeServer(app, port=0)
    await server.start()
    async with BlazeClient(port=server.port, app=app) as client:
        assert await client.predict("add", a=1, b=2) == 3

asyncio.run(main())  # the server is never closed
"""
