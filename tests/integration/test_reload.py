"""`blaze serve --reload`: an edited model is served without a restart by hand, no call is lost,
a running stream finishes on the old code, and an edit that does not import leaves the old
version serving."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import anyio
import pytest

from blazerpc import BlazeClient

from .support import WAIT_S, blaze_serve, read_line, wait_until

pytestmark = pytest.mark.anyio

APP = """
import asyncio
from collections.abc import AsyncIterator

from blazerpc import BlazeApp

app = BlazeApp()
VERSION = "{version}"


@app.model("version")
def version() -> str:
    return VERSION


@app.model("slow", streaming=True)
async def slow(n: int) -> AsyncIterator[str]:
    for i in range(n):
        await asyncio.sleep(0.05)
        yield f"{{VERSION}}-{{i}}"
"""


def _write_app(where: Path, version: str, extra: str = "") -> None:
    path = where / "app.py"
    path.write_text(textwrap.dedent(APP.format(version=version)) + extra)
    os.utime(path)  # a fresh mtime even if two writes land in the same clock tick


async def _wait_for_log(log: Path, text: str, *, after: int = 0) -> str:
    """The log's text once it holds `text` past offset `after`."""
    await wait_until(lambda: text in log.read_text()[after:], f"{text!r} in the log")
    return _read(log)


def _read(log: Path) -> str:
    return log.read_text()


async def test_an_edited_model_is_served_with_no_call_lost(tmp_path: Path) -> None:
    _write_app(tmp_path, "v1")
    log = tmp_path / "serve.log"
    with (
        log.open("w") as stderr,
        blaze_serve("app.py:app", "--reload", cwd=tmp_path, stderr=stderr) as served,
    ):
        assert served.process.stdout is not None
        answers: list[str] = []
        failures: list[BaseException] = []
        stream_items: list[str] = []

        async with BlazeClient(port=served.port, timeout=10) as client:

            async def keep_calling() -> None:
                while not answers or answers[-1] != "v2":
                    try:
                        answers.append(await client.predict("version"))
                    except Exception as err:  # every failure is a lost call
                        failures.append(err)
                    await anyio.sleep(0.01)

            async def long_stream() -> None:
                async for item in client.stream("slow", n=60):  # 3 s, across the reload
                    stream_items.append(item)

            await _wait_for_log(log, "reload: watching")
            assert await client.predict("version") == "v1"
            with anyio.fail_after(WAIT_S):
                async with anyio.create_task_group() as calls:
                    calls.start_soon(long_stream)
                    calls.start_soon(keep_calling)
                    # the stream runs on the old worker
                    await wait_until(lambda: len(stream_items) >= 5, "the stream began")
                    _write_app(tmp_path, "v2")

        banner = await read_line(served.process.stdout, "blazerpc serving")
        text = _read(log)

    assert failures == []
    switch = answers.index("v2")
    assert set(answers[:switch]) == {"v1"} and set(answers[switch:]) == {"v2"}
    assert stream_items == [f"v1-{i}" for i in range(60)]  # finished on the old code
    assert "reloading: app.py changed; starting 1 new workers" in text
    assert "reloaded in" in text and "1 old workers draining" in text
    assert banner.startswith("blazerpc serving 2 models on 127.0.0.1:")


async def test_an_edit_that_fails_to_import_leaves_the_old_version_serving(
    tmp_path: Path,
) -> None:
    _write_app(tmp_path, "v1")
    log = tmp_path / "serve.log"
    with (
        log.open("w") as stderr,
        blaze_serve(
            "app.py:app", "--reload", "--workers", "2", cwd=tmp_path, stderr=stderr
        ) as served,
    ):
        await _wait_for_log(log, "reload: watching")
        _write_app(tmp_path, "v2", extra="\nraise RuntimeError('half-written model')\n")
        text = await _wait_for_log(log, "reload failed")
        async with BlazeClient(port=served.port, timeout=10) as client:
            still = await client.predict("version")
        mark = len(text)
        _write_app(tmp_path, "v3")
        text = await _wait_for_log(log, "reloaded in", after=mark)
        answers = []
        for _ in range(6):  # fresh connections, spread over both new workers
            async with BlazeClient(port=served.port, timeout=10) as client:
                answers.append(await client.predict("version"))

    assert still == "v1"
    assert "half-written model" in text  # the worker's own one-line error
    assert "The previous version goes on serving; fix the code and save." in text
    assert "starting 2 new workers" in text[mark:] and "2 old workers draining" in text[mark:]
    assert answers == ["v3"] * 6


async def test_a_version_that_hangs_while_loading_is_replaced_by_the_next_edit(
    tmp_path: Path,
) -> None:
    _write_app(tmp_path, "v1")
    log = tmp_path / "serve.log"
    with (
        log.open("w") as stderr,
        blaze_serve("app.py:app", "--reload", cwd=tmp_path, stderr=stderr) as served,
    ):
        await _wait_for_log(log, "reload: watching")
        hang = "\nimport pathlib, time\npathlib.Path('hung').touch()\ntime.sleep(3600)\n"
        _write_app(tmp_path, "v2", extra=hang)  # a stray wait at import
        await wait_until((tmp_path / "hung").exists, "the new worker hangs")
        _write_app(tmp_path, "v3")
        text = await _wait_for_log(log, "reloaded in")
        async with BlazeClient(port=served.port, timeout=10) as client:
            answer = await client.predict("version")
    assert answer == "v3"
    assert "app.py changed again while the new workers started; starting over" in text
