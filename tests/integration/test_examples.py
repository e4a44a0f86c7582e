"""Every example app, served for real and called through BlazeClient."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import pytest

from blazerpc import RpcError, Status
from blazerpc.testing import serve_app
from examples import chat, detect, tracker, transcribe

pytestmark = pytest.mark.anyio


async def test_chat_streams_tokens_from_async_and_sync_generators() -> None:
    async with serve_app(chat.app) as client:
        tokens = [t async for t in client.stream("generate", prompt="a b c d", max_tokens=3)]
        assert tokens == ["a", "b", "c"]
        typed = [t async for t in client.stream(chat.generate_sync, prompt="x y z")]
        assert typed == ["x", "y", "z"]


async def test_detect_returns_structs_filtered_by_threshold() -> None:
    async with serve_app(detect.app) as client:
        everything = await client.predict(detect.detect, image=b"cat.jpg", threshold=0.0)
        assert all(isinstance(box, detect.Box) for box in everything)
        assert everything == detect.detect(b"cat.jpg", threshold=0.0)
        confident = await client.predict("detect", image=b"cat.jpg", threshold=0.5)
        assert confident == [box for box in everything if box.score >= 0.5]


async def test_transcribe_reads_a_client_stream() -> None:
    async with serve_app(transcribe.app) as client:
        transcript = await client.send_stream("transcribe", [b"hel", b"lo ", b"world"])
        assert transcript == transcribe.Transcript(text="hello world", chunks=3, total_bytes=11)


async def test_tracker_keeps_ids_per_stream_and_answers_each_frame_before_the_next() -> None:
    answers: list[tracker.Tracks] = []
    answered = anyio.Event()

    async def frames() -> AsyncIterator[tracker.Frame]:
        nonlocal answered
        for points in ([(0, 0), (100, 100)], [(103, 99), (2, 1)], [(5, 3)]):
            yield tracker.Frame([tracker.Point(x, y) for x, y in points])
            await answered.wait()  # ping-pong: the next frame waits for this frame's answer
            answered = anyio.Event()

    async with serve_app(tracker.app) as client:
        with anyio.fail_after(10):
            async with contextlib.aclosing(client.exchange("track", frames())) as stream:
                async for tracks in stream:
                    answers.append(tracks)
                    answered.set()

        assert [a.frame for a in answers] == [1, 2, 3]
        assert [(t.track_id, t.x, t.age) for t in answers[1].tracks] == [(2, 103, 2), (1, 2, 2)]
        assert [(t.track_id, t.age) for t in answers[2].tracks] == [(1, 3)]

        fresh = [t async for t in client.exchange("track", [tracker.Frame([tracker.Point(5, 3)])])]
        assert [(t.track_id, t.age) for t in fresh[0].tracks] == [(1, 1)]  # no state leaks


async def test_chat_content_filter_fails_the_stream_mid_answer() -> None:
    async with serve_app(chat.app) as client:
        received: list[str] = []
        with pytest.raises(RpcError) as err:
            async for token in client.stream(chat.generate_filtered, prompt="oh darn it"):
                received.append(token)
        assert received == ["oh"]
        assert err.value.status is Status.FAILED_PRECONDITION
        assert "word 2" in err.value.message
